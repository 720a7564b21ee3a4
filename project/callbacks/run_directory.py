"""The run's directory: named when a fit starts and ends, removed when a run fails before its first step."""

import shutil
import time
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger


class RunDirectory(Callback):
    """Prints ``run directory: logs/<name>/version_<n>`` when a fit starts and its checkpoints when it ends
    (stdout, rank 0; an interrupted fit says where it saved instead, ``GracefulStop``), and removes the run
    directory of a run that fails before its first step.

    The CLI builds one per trainer, before the trainer has created any directory, and calls
    :meth:`remove_if_unused` when its command fails. The run directory is removed only if it did not exist
    then (a resumed run's never is), no batch ran in this process (the sanity check aside) and this process
    saved no checkpoint: all it holds is what setting the run up wrote (config.yaml, the hyperparameters, an
    events file without a step). Parent folders created for it go too, if empty.

    Args:
        logger: The trainer's logger. Only a ``TensorBoardLogger`` or ``CSVLogger`` run directory is removed.
    """

    def __init__(self, logger: Logger | None) -> None:
        self.logger = logger if isinstance(logger, (TensorBoardLogger, CSVLogger)) else None
        self.ran_a_batch = False
        self.directory: str | None = None
        self._since = time.time()
        root = Path(self.logger.root_dir).absolute() if self.logger is not None else None
        # What existed before this process: the runs beside this one, and which folders above them are missing.
        self._before = set(root.iterdir()) if root is not None and root.is_dir() else set()
        self._missing = [folder for folder in (root, *root.parents) if not folder.exists()] if root else []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.directory = trainer.log_dir  # on every rank: it broadcasts
        if trainer.is_global_zero and self.directory is not None and not trainer.fast_dev_run:
            print(f"run directory: {self.directory}", flush=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        if checkpoint is None:
            print(f"saved no checkpoint (checkpointing is off) in {self.directory}", flush=True)
            return
        saved = [checkpoint.last_model_path] if checkpoint.last_model_path else []
        if checkpoint.best_model_path and checkpoint.best_model_path != checkpoint.last_model_path:
            score = checkpoint.best_model_score
            score = f" ({score:.4f})" if score is not None else ""
            saved.append(f"best by {checkpoint.monitor}{score}: {checkpoint.best_model_path}")
        print(f"saved {'; '.join(saved) or 'no checkpoint'}", flush=True)

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        self.ran_a_batch = True

    def on_validation_batch_end(self, trainer: Trainer, *args) -> None:
        self.ran_a_batch = self.ran_a_batch or not trainer.sanity_checking

    def on_test_batch_end(self, trainer: Trainer, *args) -> None:
        self.ran_a_batch = True

    def on_predict_batch_end(self, trainer: Trainer, *args) -> None:
        self.ran_a_batch = True

    def remove_if_unused(self, trainer: Trainer) -> None:
        """After a failure: remove the run directory if this process created it and it holds nothing of a run."""
        if self.logger is None or self.ran_a_batch or not trainer.is_global_zero:
            return
        run = Path(self.logger.log_dir).absolute()
        if run in self._before or not run.is_dir() or self._saved_a_checkpoint(trainer, run):
            return
        shutil.rmtree(run)
        for folder in self._missing:
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        print(f"removed {self.logger.log_dir}: the run stopped before its first step", flush=True)

    def _saved_a_checkpoint(self, trainer: Trainer, run: Path) -> bool:
        folders = {run, *(Path(callback.dirpath) for callback in trainer.checkpoint_callbacks if callback.dirpath)}
        return any(
            path.stat().st_mtime >= self._since
            for folder in folders
            if folder.is_dir()
            for path in folder.rglob("*.ckpt")
        )
