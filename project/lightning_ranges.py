"""The ranges of the numbers LightningCLI hands to Lightning, checked when the config is read: every numeric
``--trainer.*`` setting, and ``--seed_everything``.

Lightning's Trainer refuses some bad values itself when it is built, in one clear line (``--trainer.num_nodes 0``:
"`num_nodes` must be a positive integer"). Others it takes, and fails on with a traceback once work has started
(``--trainer.accumulate_grad_batches 0``: a ZeroDivisionError at the first step), or ignores without a word
(``--trainer.gradient_clip_val -1``: no clipping). ``TRAINER_RANGES`` has an entry for every int or float parameter
of ``Trainer.__init__``, so that a new Lightning's new setting is noticed (tests/test_ranges.py): the range checked
here, or ``LIGHTNING`` where the Trainer's own refusal is clear.
"""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from project.errors import UsageError

LIGHTNING = "refused by Lightning's Trainer when it is built, in one line that names it"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(low: int, or_minus_one: bool = False) -> Callable[[Any], bool]:
    return lambda value: value >= low or (or_minus_one and value == -1)


def _val_check_interval(value: Any) -> bool:
    if isinstance(value, (str, timedelta, dict)):  # a time; Lightning parses it
        return True
    return value >= 1 if _whole(value) else 0 < value <= 1


def _devices(value: Any) -> bool:
    value = _as_whole(value)
    return not _whole(value) or value >= 1 or value == -1  # a list or text of GPU indices: Lightning's to read


# Lightning's defaults (None) are not checked.
TRAINER_RANGES: dict[str, tuple[Callable[[Any], bool], str] | str] = {
    "devices": (_devices, ">= 1, or -1 for every GPU"),
    "num_nodes": LIGHTNING,
    "fast_dev_run": LIGHTNING,
    "max_epochs": (_at_least(1, or_minus_one=True), ">= 1, or -1 for no limit"),
    "min_epochs": (_at_least(0), ">= 0"),
    "max_steps": (_at_least(1, or_minus_one=True), ">= 1, or -1 for no limit"),
    "min_steps": (_at_least(0), ">= 0"),
    "limit_train_batches": LIGHTNING,
    "limit_val_batches": LIGHTNING,
    "limit_test_batches": LIGHTNING,
    "limit_predict_batches": LIGHTNING,
    "overfit_batches": LIGHTNING,
    "val_check_interval": (
        _val_check_interval,
        "a whole number of batches >= 1, a fraction of the epoch in (0, 1], or a time (DD:HH:MM:SS)",
    ),
    "check_val_every_n_epoch": (_at_least(1), ">= 1, or null to validate every val_check_interval batches"),
    "num_sanity_val_steps": (_at_least(0, or_minus_one=True), ">= 0, or -1 for the whole validation set"),
    "log_every_n_steps": (_at_least(0), ">= 1, or 0 for no logging within an epoch"),
    "accumulate_grad_batches": (_at_least(1), ">= 1 (batches per optimizer step)"),
    "gradient_clip_val": (_at_least(0), ">= 0 (0 or null: no clipping)"),
    "reload_dataloaders_every_n_epochs": LIGHTNING,
}
# Numbers of Lightning's callbacks (the CLI's defaults) that Lightning checks only once the run has started.
CALLBACK_RANGES = {"ThroughputMonitor": {"window_size": (_at_least(2), ">= 2 (the batches each rate averages)")}}
SEEDS = (0, 2**32 - 1)  # what Lightning's seed_everything (numpy's seed) takes


def check_ranges(config) -> None:
    """Raises a ``UsageError`` naming the first setting out of its range in ``config``, a subcommand's parsed
    config (``trainer``, ``seed_everything``)."""
    seed = config.get("seed_everything")
    if _whole(seed) and not SEEDS[0] <= seed <= SEEDS[1]:
        raise UsageError(
            f"--seed_everything must be a whole number in [{SEEDS[0]}, {SEEDS[1]}], true for a random seed or "
            f"false for none, got {seed}"
        )
    trainer = config.trainer
    for name, rule in TRAINER_RANGES.items():
        value = trainer.get(name)
        if rule == LIGHTNING or value is None or isinstance(value, bool):
            continue
        allowed, wording = rule
        if not allowed(value):
            raise UsageError(f"--trainer.{name} must be {wording}, got {value}")
    callbacks = trainer.get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        name = str(getattr(callback, "class_path", "")).rsplit(".", 1)[-1]
        for setting, (allowed, wording) in CALLBACK_RANGES.get(name, {}).items():
            init_args = getattr(callback, "init_args", None)
            value = init_args.get(setting) if init_args is not None else None
            if value is not None and not allowed(value):
                raise UsageError(f"trainer.callbacks: {name} {setting} must be {wording}, got {value}")
    devices = _as_whole(trainer.get("devices"))
    if _whole(devices) and devices < 1 and _on_cpu(trainer.get("accelerator")):
        raise UsageError(f"--trainer.devices {devices}: on a CPU it counts processes and must be >= 1 (-1: every GPU)")


def _as_whole(value: Any) -> Any:
    """``devices`` as the parser leaves it: "-1" and "2" are text (it may be a list of GPU indices, "0,1")."""
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)
    return value


def _on_cpu(accelerator: Any) -> bool:
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    return accelerator == "cpu" or (accelerator == "auto" and not gpu)
