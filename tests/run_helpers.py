"""Pieces the tests name by class_path in `python main.py` runs (the repo root is on sys.path)."""

import os
import signal
from pathlib import Path

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier


class SaveWeightsPerRank(Callback):
    """At the end of fit, each rank saves its parameters, and the training indices its loader draws
    (for the next epoch), to ``<dirpath>/rank<global rank>.pt``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        weights = {name: p.detach().cpu() for name, p in pl_module.named_parameters()}
        torch.save(
            {
                "weights": weights,
                "world_size": trainer.world_size,
                "pid": os.getpid(),
                "shard": trainer.train_dataloader.indices(),
                "train_size": len(trainer.datamodule.splits["train"][0]),
            },
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )


class DataMissingOnOneRank(SyntheticDataModule):
    """Synthetic data that one rank cannot find, like a data folder mounted on some nodes only."""

    def __init__(self, failing_rank: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.failing_rank = failing_rank

    def setup(self, stage: str) -> None:
        if self.trainer.global_rank == self.failing_rank:
            raise FileNotFoundError(f"data folder missing on rank {self.failing_rank}: data/train")
        super().setup(stage)


class SignalAtStep(Callback):
    """Sends ``signal`` to its own process once training reaches optimizer step ``step``, as Ctrl-C or a
    scheduler would."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


class PoisonWeightsAtStep(Callback):
    """Makes the head's weights infinite before optimizer step ``step``: the loss becomes NaN there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.network.head.weight.fill_(float("inf"))


class ModuleWithABug(ImageClassifier):
    """A user's own LightningModule whose training_step has a bug."""

    def training_step(self, batch, batch_idx):
        raise ValueError("a bug in my training_step")


class SignalInValidation(Callback):
    """Sends ``signal`` to its own process during the first validation batch after training began."""

    def __init__(self, signal: str = "SIGTERM") -> None:
        self.signal = signal

    def on_validation_batch_end(self, trainer: Trainer, *args) -> None:
        if not trainer.sanity_checking:
            os.kill(os.getpid(), getattr(signal, self.signal))


class ModuleLoggingEpochAccuracy(ImageClassifier):
    """A user's own LightningModule that logs a training metric once per epoch only."""

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean(), on_step=False, on_epoch=True)
        return self.loss(logits, labels)


class SignalInSanityCheck(Callback):
    """Sends SIGTERM to its own process during the sanity check's first validation batch."""

    def on_validation_batch_end(self, trainer: Trainer, *args) -> None:
        if trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


class NeedsAMissingPackage(SyntheticDataModule):
    """A user's datamodule that imports a package this machine lacks when it is built."""

    def __init__(self) -> None:
        import a_package_nobody_installed  # noqa: F401

        super().__init__()
