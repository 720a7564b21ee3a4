"""The LR each optimizer step uses, through the real Trainer, equals the closed form."""

from functools import partial

import pytest
import torch
from pytorch_lightning import Callback, Trainer

from conftest import expected_lr
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet
from project.optim.warmup_cosine import WarmupCosine


class RecordLR(Callback):
    """The LR of every param group at the moment each optimizer step is taken."""

    def __init__(self):
        self.steps, self.lrs = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append(trainer.global_step)
        self.lrs.append([group["lr"] for group in optimizer.param_groups])


def fit(scheduler, accumulate=1, max_epochs=2, max_steps=-1, limit_train_batches=7, optimizer=None):
    torch.manual_seed(0)
    model = ImageClassifier(
        network=partial(ConvNet, widths=(8, 8, 8)),
        optimizer=optimizer or partial(torch.optim.AdamW, lr=0.01),
        scheduler=scheduler,
    )
    record = RecordLR()
    trainer = Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=limit_train_batches,
        limit_val_batches=1,
        accumulate_grad_batches=accumulate,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16)
    trainer.fit(model, data)
    return trainer, record


@pytest.mark.parametrize("accumulate", [1, 3])
def test_every_optimizer_step_uses_the_closed_form_lr(accumulate):
    trainer, record = fit(partial(WarmupCosine, warmup_steps=3, min_lr_ratio=0.1), accumulate=accumulate)
    total = trainer.estimated_stepping_batches  # 2 epochs x ceil(7 batches / accumulate)
    assert total == 2 * -(-7 // accumulate)
    assert record.steps == list(range(total))
    assert len(record.lrs[0]) == 2  # decayed weights, and biases/norm weights without decay
    for step, lrs in enumerate(record.lrs):
        assert lrs == pytest.approx([expected_lr(step, 0.01, 3, total, floor_ratio=0.1)] * 2, abs=1e-12)
    config = trainer.lr_scheduler_configs[0]
    assert (config.interval, config.frequency) == ("step", 1)
    assert config.scheduler.total_steps == total


def test_total_steps_follows_max_epochs_and_max_steps():
    trainer, _ = fit(partial(WarmupCosine, warmup_steps=2), max_epochs=5, limit_train_batches=4)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 20
    trainer, record = fit(partial(WarmupCosine, warmup_steps=2), max_epochs=-1, max_steps=6, limit_train_batches=4)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 6
    assert [lrs[0] for lrs in record.lrs] == pytest.approx([expected_lr(s, 0.01, 2, 6) for s in range(6)], abs=1e-12)


def test_an_unbounded_run_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="total_steps must be finite, got inf"):
        fit(partial(WarmupCosine, warmup_steps=2), max_epochs=-1)


def test_configured_total_steps_wins_over_the_trainer_estimate():
    trainer, record = fit(partial(WarmupCosine, warmup_steps=2, total_steps=9))
    assert trainer.estimated_stepping_batches == 14
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 9
    for step, lrs in enumerate(record.lrs):
        assert lrs[0] == pytest.approx(expected_lr(step, 0.01, 2, 9), abs=1e-12)
    assert record.lrs[-1][0] == 0.0  # held at the floor after step 9


def test_the_plain_class_as_scheduler_is_sized_by_the_trainer():
    trainer, _ = fit(WarmupCosine)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == trainer.estimated_stepping_batches == 14


def test_torch_one_cycle_gets_its_total_steps_from_the_trainer_too():
    trainer, record = fit(partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05))
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 14
    assert len(record.lrs) == 14  # OneCycleLR raises if stepped past total_steps
