"""Linear warmup, then cosine decay to a floor: a plain torch LR scheduler, usable without Lightning."""

import math
import numbers

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from project.errors import UsageError


class WarmupCosine(LRScheduler):
    """Linear warmup from ``start_factor * b`` to ``b``, cosine decay to ``min_lr_ratio * b``, then hold.

    ``s`` is the number of optimizer steps already taken (``last_epoch``); optimizer step ``s``
    (0-based) uses, for each param group with base LR ``b``, ``W = warmup_steps``,
    ``T = total_steps``, ``f0 = start_factor`` and floor ``m = min_lr_ratio * b``::

        s < W        b * (f0 + (1 - f0) * s / W)
        W <= s < T   m + (b - m) * 0.5 * (1 + cos(pi * (s - W) / (T - W)))
        s >= T       m  (held: it never rises again)

    With the defaults this equals HuggingFace's ``get_cosine_schedule_with_warmup`` for every
    ``s <= T``. ``T`` counts the warmup. The floor is relative, so param groups keep their
    proportions and a group with LR 0 stays at 0.

    The LR is a closed form of the step count and the base LRs only; it never reads a group's
    current LR, so restoring from ``state_dict`` gives the LRs of an uninterrupted run whatever the
    order in which optimizer and scheduler are restored. Call ``step()`` once per optimizer step.

    Args:
        optimizer: The optimizer whose param groups are scheduled.
        warmup_steps: Optimizer steps of linear warmup (W); 0 starts at the peak.
        warmup_fraction: The warmup as a fraction of ``total_steps`` instead, in [0, 1) (W is
            ``round(warmup_fraction * T)``): one setting that warms up short and long runs alike.
            Give either this or ``warmup_steps``.
        total_steps: Optimizer steps of the whole schedule, warmup included (T). Left unset, the
            Lightning wiring (``project.optim.configure``) fills in the trainer's
            ``estimated_stepping_batches``; built directly, the scheduler needs it.
        start_factor: LR of the first step as a fraction of the base LR (f0), in [0, 1].
        min_lr_ratio: The floor as a fraction of each group's base LR, in [0, 1].
        last_epoch: torch's resume index; leave at -1 and restore with ``load_state_dict``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        start_factor: float = 0.0,
        min_lr_ratio: float = 0.0,
        warmup_fraction: float | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps)
        if warmup_fraction is not None:
            if self.warmup_steps:
                raise UsageError(
                    f"WarmupCosine: give warmup_steps ({warmup_steps}) or warmup_fraction ({warmup_fraction}), "
                    "not both",
                    "warmup_fraction",
                )
            if isinstance(warmup_fraction, bool) or not 0.0 <= warmup_fraction < 1.0:
                raise UsageError(f"WarmupCosine: warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
            total = _check_total_steps(total_steps, 0)
            self.warmup_steps = round(warmup_fraction * total)
        self.warmup_fraction = warmup_fraction
        self.total_steps = _check_total_steps(total_steps, self.warmup_steps)
        self.start_factor = _check_ratio("start_factor", start_factor)
        self.min_lr_ratio = _check_ratio("min_lr_ratio", min_lr_ratio)
        if last_epoch < -1:
            raise UsageError(f"WarmupCosine: last_epoch must be >= -1 (-1: a new schedule), got {last_epoch}")
        if last_epoch != -1 and any("initial_lr" not in group for group in optimizer.param_groups):
            # torch's LRScheduler would raise a KeyError
            raise UsageError(
                f"WarmupCosine: last_epoch {last_epoch} continues a schedule that this optimizer has not run "
                "(its param groups hold no initial_lr); leave last_epoch at -1 and restore with load_state_dict"
            )
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, step: int) -> float:
        """The multiple of a group's base LR used by optimizer step ``step``."""
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr_ratio
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        factor = self.lr_factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    # torch calls this for `step(epoch)`; the schedule is a closed form anyway.
    _get_closed_form_lr = get_lr

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume the saved schedule: its shape (base LRs, steps, factors) replaces this instance's."""
        super().load_state_dict(state_dict)
        # Building a scheduler writes step 0's LR into the optimizer; if the optimizer was restored
        # before that, its LR is now wrong for the restored step. Write the restored step's LR.
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr


def _check_steps(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise UsageError(f"WarmupCosine: {name} must be a whole number of optimizer steps >= 0, got {value!r}", name)
    return int(value)


def _check_total_steps(value: object, warmup_steps: int) -> int:
    if value is None:
        raise UsageError(
            "WarmupCosine: total_steps is required when the scheduler is built directly "
            "(the Lightning wiring fills it in from trainer.estimated_stepping_batches)",
            "total_steps",
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(
            f"WarmupCosine: total_steps must be finite, got {value!r}; an unbounded run "
            "(trainer.max_epochs=-1 and no max_steps) has no length: set trainer.max_epochs, "
            "trainer.max_steps or the scheduler's total_steps",
            "total_steps",
        )
    total = _check_steps("total_steps", value)
    if total < 1 or total < warmup_steps:
        raise UsageError(
            f"WarmupCosine: total_steps must be >= 1 and >= warmup_steps ({warmup_steps}), got {total}; "
            "total_steps counts the warmup",
            "total_steps",
        )
    return total


def _check_ratio(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise UsageError(f"WarmupCosine: {name} must be a number in [0, 1], got {value!r}")
    return float(value)
