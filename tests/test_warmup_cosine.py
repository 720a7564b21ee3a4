"""WarmupCosine on its own: closed form, edge cases, validation, state-dict round trips."""

import math

import pytest
import torch

from conftest import expected_lr
from project.optim.warmup_cosine import WarmupCosine


def make_optimizer(lrs=(0.1,)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def lrs_used(scheduler, optimizer, steps):
    """The LR of every group at each optimizer step, stepping the scheduler after each."""
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize(
    "warmup, total, start_factor, floor_ratio",
    [
        (10, 100, 0.0, 0.0),
        (0, 50, 0.0, 0.0),
        (1, 50, 0.0, 0.1),
        (25, 25, 0.0, 0.0),
        (7, 40, 0.2, 0.05),
        (0, 1, 0.0, 0.3),
    ],
)
def test_every_step_matches_closed_form_and_holds_after_total(warmup, total, start_factor, floor_ratio):
    bases = (0.1, 0.02, 0.0)
    optimizer = make_optimizer(bases)
    scheduler = WarmupCosine(optimizer, warmup, total, start_factor=start_factor, min_lr_ratio=floor_ratio)
    seen = lrs_used(scheduler, optimizer, total + 20)
    for step, lrs in enumerate(seen):
        for base, lr in zip(bases, lrs):
            assert lr == pytest.approx(expected_lr(step, base, warmup, total, start_factor, floor_ratio), abs=1e-12)
    # Held at the floor after the end, never rising again; a group at LR 0 stays at 0.
    assert all(lrs == [floor_ratio * b for b in bases] for lrs in seen[total:])
    after_peak = [lrs[0] for lrs in seen[warmup:]]
    assert all(a >= b - 1e-15 for a, b in zip(after_peak, after_peak[1:]))


def test_first_step_lr_is_zero_and_peak_at_warmup_by_default():
    optimizer = make_optimizer()
    seen = lrs_used(WarmupCosine(optimizer, warmup_steps=4, total_steps=10), optimizer, 6)
    assert [lrs[0] for lrs in seen[:5]] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])


def test_equals_huggingface_cosine_schedule_with_warmup():
    # transformers.get_cosine_schedule_with_warmup, num_cycles=0.5, written out.
    def hf_factor(step, warmup, total):
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    optimizer = make_optimizer((0.3,))
    seen = lrs_used(WarmupCosine(optimizer, warmup_steps=13, total_steps=97), optimizer, 98)
    for step, lrs in enumerate(seen):
        assert lrs[0] == pytest.approx(0.3 * hf_factor(step, 13, 97), abs=1e-12)


def test_never_reads_the_current_lr():
    optimizer = make_optimizer()
    scheduler = WarmupCosine(optimizer, warmup_steps=5, total_steps=20)
    lrs_used(scheduler, optimizer, 8)
    optimizer.param_groups[0]["lr"] = 123.0  # e.g. someone else's scheduler or a bad restore
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr(9, 0.1, 5, 20))


@pytest.mark.parametrize("restore_optimizer_first", [True, False])
def test_state_dict_round_trip_continues_like_an_uninterrupted_run(restore_optimizer_first):
    def build():
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.01}], lr=0.1)
        return model, optimizer

    torch.manual_seed(0)
    model, optimizer = build()
    scheduler = WarmupCosine(optimizer, warmup_steps=6, total_steps=30, min_lr_ratio=0.1)
    uninterrupted = lrs_used(scheduler, optimizer, 30)

    torch.manual_seed(0)
    model, optimizer = build()
    scheduler = WarmupCosine(optimizer, warmup_steps=6, total_steps=30, min_lr_ratio=0.1)
    first_half = lrs_used(scheduler, optimizer, 11)
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()

    model, optimizer = build()
    if restore_optimizer_first:
        optimizer.load_state_dict(saved_optimizer)
        scheduler = WarmupCosine(optimizer, warmup_steps=6, total_steps=30, min_lr_ratio=0.1)
        scheduler.load_state_dict(saved_scheduler)
    else:
        scheduler = WarmupCosine(optimizer, warmup_steps=6, total_steps=30, min_lr_ratio=0.1)
        scheduler.load_state_dict(saved_scheduler)
        optimizer.load_state_dict(saved_optimizer)
    assert first_half + lrs_used(scheduler, optimizer, 19) == uninterrupted


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"warmup_steps": -1}, "warmup_steps", "-1"),
        ({"warmup_steps": 2.5}, "warmup_steps", "2.5"),
        ({"warmup_steps": True}, "warmup_steps", "True"),
        ({"total_steps": 0}, "total_steps", "0"),
        ({"total_steps": 10.0}, "total_steps", "10.0"),
        ({"total_steps": float("inf")}, "total_steps", "inf"),
        ({"total_steps": None}, "total_steps", "required"),
        ({"warmup_steps": 20, "total_steps": 10}, "total_steps", "10"),
        ({"start_factor": -0.1}, "start_factor", "-0.1"),
        ({"start_factor": 1.5}, "start_factor", "1.5"),
        ({"min_lr_ratio": 1.01}, "min_lr_ratio", "1.01"),
        ({"min_lr_ratio": float("nan")}, "min_lr_ratio", "nan"),
    ],
)
def test_invalid_values_raise_value_error_naming_parameter_and_value(kwargs, name, value):
    arguments = {"warmup_steps": 2, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError) as error:
        WarmupCosine(make_optimizer(), **arguments)
    assert name in str(error.value) and value in str(error.value)
