"""Lightning's ModelCheckpoint, with ``last.ckpt`` always the newest state of the fit."""

import warnings

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from project.errors import UsageError

# A resumed run saves into its own checkpoint directory, which holds its earlier checkpoints by design.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (with ``save_last=True``) follows the run to its end.

    With a ``monitor``, Lightning 2.6 rewrites ``last.ckpt`` only at a step where it also saves a
    top-k checkpoint, and at the end of training only if it never wrote one: a run whose last epoch
    is not its best, or that stops at ``max_steps`` or ``max_time`` mid-epoch, would end with older
    weights in ``last.ckpt``, and ``--ckpt_path last`` would resume or evaluate them without a word.
    Here ``last.ckpt`` is also written at the end of every training epoch, at the step where a run
    stops mid-epoch, and when training ends, unless this step is already saved. (A signal saves it
    too: ``GracefulStop``.) A ``fast_dev_run`` saves nothing.

    A ``monitor`` that no one logs (a typo) is refused before the first step where the module says what it logs:
    a ``metrics_logged_in_fit`` of its own class (``ImageClassifier``'s; a subclass may log more, so it is not
    inherited), with those of the callbacks that have one, and Lightning's ``epoch`` and ``step``. A module that
    does not say gets a warning at the first training step if neither the sanity check nor that step logged
    it, and the run stops with one error line at the end of the first epoch with a validation that did not log
    it either, with ``last.ckpt`` saved first (Lightning alone stops there too, with nothing saved).
    """

    _metrics_seen_in_validation = None
    _validated = False  # a validation (not the sanity check) has run: all the run's metric names are known

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_monitor(trainer, pl_module)
        super().setup(trainer, pl_module, stage)

    def check_monitor(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuses a ``monitor`` that ``pl_module`` says it does not log (see the class's docstring)."""
        logged = vars(type(pl_module)).get("metrics_logged_in_fit")
        if not self.monitor or logged is None:
            return
        by_callbacks = [
            name for callback in trainer.callbacks for name in getattr(callback, "metrics_logged_in_fit", ())
        ]
        if self.monitor not in (*logged, *by_callbacks, "epoch", "step"):
            raise UsageError(
                f"checkpoint.monitor {self.monitor!r} is not a metric {type(pl_module).__name__} logs; it logs: "
                f"{', '.join(logged)}; or --checkpoint.monitor null"
            )

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._metrics_seen_in_validation = set(trainer.callback_metrics)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        if self._metrics_seen_in_validation is not None:  # the first training step: look once
            logged = self._metrics_seen_in_validation | set(trainer.callback_metrics)
            self._metrics_seen_in_validation = None
            if self.monitor and self.monitor not in logged:  # an epoch-level metric may still come
                warnings.warn(
                    f"checkpoint.monitor {self.monitor!r} is not logged so far ({', '.join(sorted(logged))});"
                    " unless it is by the end of the epoch, the run stops there"
                )
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        # A stop mid-epoch (max_steps, max_time) is saved here: Lightning then ends the epoch early,
        # and a checkpoint taken at that epoch end would resume as if the whole epoch had run.
        stopping = trainer.should_stop or 0 <= trainer.max_steps <= trainer.global_step
        if stopping and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_last_unless_saved(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor and self._validated and self.monitor not in trainer.callback_metrics:
            self._save_last_unless_saved(trainer)
            raise UsageError(
                f"checkpoint.monitor {self.monitor!r} is not a logged metric; the logged ones are: "
                f"{', '.join(sorted(trainer.callback_metrics))} (last.ckpt holds this epoch)"
            )
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_unless_saved(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:
            # A dry run saves nothing (Lightning's other saves check this): Lightning 2.6's on_train_end would
            # write last.ckpt, and into ./checkpoints/, as fast_dev_run replaces the run's logger by a DummyLogger.
            return
        super().on_train_end(trainer, pl_module)
        self._save_last_unless_saved(trainer)

    def _save_last_unless_saved(self, trainer: Trainer) -> None:
        # _last_global_step_saved: the step of Lightning's newest save, which writes last.ckpt with it.
        if not self.save_last or trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        self.last_model_path = self.last_model_path or self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        self._save_checkpoint(trainer, self.last_model_path)  # noted as saved: Lightning's on_train_end adds none
