"""Lightning's ModelCheckpoint, with ``last.ckpt`` always the newest state of the fit."""

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from project.errors import UsageError


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (with ``save_last=True``) follows the run to its end.

    With a ``monitor``, Lightning 2.6 rewrites ``last.ckpt`` only at a step where it also saves a
    top-k checkpoint, and at the end of training only if it never wrote one: a run whose last epoch
    is not its best, or that stops at ``max_steps`` or ``max_time`` mid-epoch, would end with older
    weights in ``last.ckpt``, and ``--ckpt_path last`` would resume or evaluate them without a word.
    Here ``last.ckpt`` is also written at the end of every training epoch and when training ends,
    unless this step is already saved. (A signal saves it too: ``GracefulStop``.)

    A ``monitor`` that neither the sanity check's validation nor the first training step logs (a
    typo) stops the run there, where Lightning would find it only when it first saves, an epoch later.
    """

    _metrics_seen_in_validation = None

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._metrics_seen_in_validation = set(trainer.callback_metrics)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        if self._metrics_seen_in_validation is not None:  # the first training step: check once
            logged = self._metrics_seen_in_validation | set(trainer.callback_metrics)
            self._metrics_seen_in_validation = None
            if self.monitor and self.monitor not in logged:
                raise UsageError(f"checkpoint.monitor {self.monitor!r} is not a logged metric; the logged ones are: "
                                 f"{', '.join(sorted(logged))}")
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_unless_saved(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_unless_saved(trainer)

    def _save_last_unless_saved(self, trainer: Trainer) -> None:
        # _last_global_step_saved: the step of Lightning's newest save, which writes last.ckpt with it.
        if not self.save_last or trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        self.last_model_path = self.last_model_path or self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
