"""The checkpoint policy: which checkpoint a command means, whether it is whole and fits the model,
which run directory a resume continues, which configured values the checkpoint's win over, and how
a checkpoint reaches the disk."""

import os
import pickle
import sys
import warnings
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.plugins import TorchCheckpointIO
from torch import nn

from project.errors import UsageError

LIGHTNING_KEYS = ("state_dict", "global_step", "pytorch-lightning_version")  # in every checkpoint Lightning writes


def check_checkpoint_file(path: Path, weights_only: bool = True) -> None:
    """Raise a one-line error unless ``path`` is a whole Lightning checkpoint file, before anything loads it."""
    _require_file(path)
    not_a_checkpoint = UsageError(
        f"--ckpt_path {path} is not a checkpoint (a file written by torch.save); "
        "pass a .ckpt file from a run's checkpoints/ folder"
    )
    if not zipfile.is_zipfile(path):
        raise not_a_checkpoint
    # torch.load does not check the zip container's CRCs: damaged bytes would load as wrong weights.
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            pickled = any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, EOFError) as err:
        damaged, pickled = f"its container ({err})", True
    if damaged:
        raise UsageError(
            f"--ckpt_path {path} is damaged ({damaged} fails its checksum): a partial copy or a disk "
            "error? Nothing was loaded; use another checkpoint of the run"
        )
    if not pickled:  # another kind of zip file
        raise not_a_checkpoint
    # Its top level only: mmap leaves the tensors on the disk.
    checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    missing = [key for key in LIGHTNING_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise UsageError(
            f"--ckpt_path {path} is not a Lightning checkpoint (it has no {', '.join(missing)}: weights saved by "
            f"torch.save(model.state_dict())?); to start a new run from these weights, pass --model.init_weights "
            f"{path} instead"
        )


def _require_file(path: Path) -> None:
    if path.is_dir():
        found = sorted(path.glob("**/last.ckpt"))[:1] or sorted(path.glob("**/*.ckpt"))[:1]
        raise UsageError(
            f"--ckpt_path {path} is a folder; give a checkpoint file in it"
            + (f", e.g. {found[0]}" if found else " (it holds no .ckpt file)")
            + ", or --ckpt_path last for the newest run's last.ckpt"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"--ckpt_path {path}: no such file. A run's checkpoints are in "
            "logs/<name>/<version>/checkpoints/; `--ckpt_path last` picks the newest last.ckpt"
        )


def run_config(checkpoint: Path) -> Path:
    """The ``config.yaml`` of the run that wrote ``checkpoint`` (``<run>/checkpoints/<file>``): the config a
    command takes when it is given the checkpoint and no ``--config``."""
    _require_file(checkpoint)
    config = checkpoint.absolute().parent.parent / "config.yaml"
    if not config.is_file():
        try:
            check_checkpoint_file(checkpoint)  # a file that is no checkpoint at all says so first
        except pickle.UnpicklingError:
            pass  # a checkpoint, whose objects --weights_only false may load
        raise FileNotFoundError(
            f"--ckpt_path {checkpoint} without --config: its run directory has no config.yaml ({config}) to "
            "take the run's settings from; pass --config with the run's config.yaml or the config it was trained with"
        )
    return config


def runs_root(logger_args: dict) -> Path:
    """``<save_dir>/<name>``: where the configured logger keeps this config's runs."""
    if not logger_args.get("save_dir"):
        raise UsageError(
            "--ckpt_path last needs a logger with a save_dir (the default TensorBoard logger); "
            "pass the checkpoint's path instead"
        )
    return Path(logger_args["save_dir"]) / (logger_args.get("name") or "")


def newest_last_checkpoint(logger_args: dict, required: bool) -> Path | None:
    """The newest ``<run>/checkpoints/last.ckpt`` of this config's runs; None (a fresh start) if there is none
    and it is not ``required``. (Lightning resolves "last" in the new run's own, still empty, folder.)"""
    root = runs_root(logger_args)
    candidates = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if candidates:
        print(f"--ckpt_path last: {'using' if required else 'resuming from'} {candidates[-1]}", file=sys.stderr)
        return candidates[-1]
    if required:
        raise FileNotFoundError(
            f"--ckpt_path last: no run under {root}/ has checkpoints/last.ckpt; pass the checkpoint's path instead"
        )
    print(f"--ckpt_path last: no run under {root}/ yet; starting one", file=sys.stderr)
    return None


def run_continued_by(checkpoint: Path, logger_args: dict) -> Path | None:
    """The run directory that resuming ``checkpoint`` continues: its own, if it is that run's newest state
    (``<save_dir>/<name>/<run>/checkpoints/last.ckpt``). Any other checkpoint (a best one, one copied
    elsewhere) starts a new run, so that the newer checkpoints of its run are never overwritten."""
    run = checkpoint.parent.parent
    if (
        checkpoint.name == "last.ckpt"
        and checkpoint.parent.name == "checkpoints"
        and logger_args.get("save_dir")
        and run.parent.resolve() == runs_root(logger_args).resolve()
    ):
        return run
    return None


def checkpoint_step(path: Path, weights_only: bool) -> int:
    """The global step a checkpoint was taken at, read without loading its tensors."""
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)["global_step"]


def check_checkpoint_fits(model: nn.Module, path: Path, weights_only: bool) -> None:
    """Raise a one-line error naming the differences if the checkpoint's weights do not fit ``model``."""
    saved = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True).get("state_dict", {})
    expected = model.state_dict()
    differences = [
        f"{key} is {tuple(saved[key].shape)} there, {tuple(value.shape)} here"
        for key, value in expected.items()
        if key in saved and saved[key].shape != value.shape
    ]
    differences += [f"{key} is not there" for key in expected if key not in saved]
    differences += [f"{key} is not in this model" for key in saved if key not in expected]
    if differences:
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        raise UsageError(
            "the checkpoint does not fit the configured model (another network, widths or number of "
            f"classes?): {'; '.join(differences[:3])}{more}"
        )


def warn_not_applied(not_applied: list[str], note: str = "") -> None:
    """The one warning naming every value given for this run that the checkpoint's value wins over."""
    if not_applied:
        warnings.warn(
            "the checkpoint's settings are kept; values given for this run that are not applied: "
            + ", ".join(not_applied)
            + "."
            + note
            + " To change them, start a new run."
        )


class ResumeReport(Callback):
    """Warns once when a fit resumes, naming each value given for this run that the checkpoint's wins over.

    The checkpoint wins for all that defines the run so far: the model's settings (LightningCLI
    rebuilds the model from its hyperparameters; the CLI passes the given values that lost), the
    optimizers' hyperparameters, and the schedulers' state, so a schedule keeps its length.

    It also keeps the resumed run's logged points at the steps an uninterrupted run logs them at
    (``on_train_epoch_end``).
    """

    def __init__(self, model_not_applied: list[str]) -> None:
        self.model_not_applied = model_not_applied
        self._checkpoint: dict | None = None
        self._restored_step: int | None = None  # the loaded checkpoint's, until the first epoch end after it

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._checkpoint = checkpoint
        self._restored_step = checkpoint.get("global_step")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning 2.6 restarts a checkpoint taken at an epoch's end with its logging step one ahead of the
        # optimizer step (it adds one that the checkpoint already counts): every point the resumed run logged would
        # sit one step late, and its first step's would be missing. The logging step is set back, before the
        # next epoch logs anything. (A checkpoint taken mid-epoch restarts right; then they are equal here.)
        loop = trainer.fit_loop.epoch_loop
        if self._restored_step is not None and pl_module.automatic_optimization:
            if self._restored_step == trainer.global_step and loop._batches_that_stepped == trainer.global_step + 1:
                loop._batches_that_stepped = trainer.global_step
        self._restored_step = None

    def on_fit_start(self, trainer, pl_module) -> None:
        # Lightning calls this after building the optimizers and schedulers from this run's config,
        # and before it loads the checkpoint's states into them.
        if self._checkpoint is None:
            return
        not_applied, note = list(self.model_not_applied), ""
        scheduled = bool(trainer.lr_scheduler_configs)  # then a group's LR is the scheduler's
        for optimizer, saved in zip(trainer.optimizers, self._checkpoint.get("optimizer_states", [])):
            not_applied += [
                f"{type(optimizer).__name__} param group {i} {key} {value} (kept: {kept[key]})"
                for i, (group, kept) in enumerate(zip(optimizer.param_groups, saved["param_groups"]))
                for key, value in group.items()
                if key not in ("params", "initial_lr", "lr" if scheduled else "") and key in kept and kept[key] != value
            ]
        for config, saved in zip(trainer.lr_scheduler_configs, self._checkpoint.get("lr_schedulers", [])):
            scheduler, state = config.scheduler, config.scheduler.state_dict()
            not_applied += [
                f"{type(scheduler).__name__} {key} {value} (kept: {saved[key]})"
                for key, value in state.items()
                if not key.startswith("_") and key != "last_epoch" and key in saved and saved[key] != value
            ]
            added = (state.get("total_steps") or 0) - (saved.get("total_steps") or 0)
            if added > 0 and saved.get("total_steps"):
                floor = (
                    f" (the floor: min_lr_ratio {saved['min_lr_ratio']} x the base LR)"
                    if "min_lr_ratio" in saved
                    else ""
                )
                note = (
                    f" The schedule ends at step {saved['total_steps']}: the {added} steps this run adds after it "
                    f"run at its final LR{floor}."
                )
        self._checkpoint = None
        warn_not_applied(not_applied, note)
        _warn_time_spent(trainer)


def _warn_time_spent(trainer) -> None:
    """Lightning's ``max_time`` counts the whole run's training time, across resumes: a resume whose run has
    spent it trains no step, and exits as if it had finished."""
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        spent = timedelta(seconds=round(timer.time_elapsed()))
        warnings.warn(
            f"--trainer.max_time counts the run's training time across resumes, and this run has spent "
            f"{spent} of its {timedelta(seconds=round(timer.time_elapsed() - remaining))}: this resume trains no "
            "step. To go on, give a longer --trainer.max_time (DD:HH:MM:SS)"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, flushes it to the disk, then
    renames it over the target (atomic on POSIX file systems).

    A crash, a kill or a full disk during a save leaves the previous ``last.ckpt`` in place.
    (Lightning's own writer stages the file in the system's temp directory; where that is another
    file system the final move is a copy, which a kill can cut short.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except OSError as err:
            raise OSError(
                f"could not write checkpoint {path}: {err.strerror or err}; the previous file "
                "there, if any, is unchanged"
            ) from err
        finally:
            partial.unlink(missing_ok=True)
