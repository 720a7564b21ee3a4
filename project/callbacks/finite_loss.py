"""Stop at the first non-finite training loss instead of training on NaN."""

import torch
from pytorch_lightning import Callback, LightningModule, Trainer


class StopOnNonFiniteLoss(Callback):
    """Raises ``FloatingPointError`` naming the step when the training loss is NaN or infinite.

    It runs before the checkpoint callbacks of that step, so no checkpoint of the broken weights
    is written: ``last.ckpt`` stays the last good one. (Checking every step costs a device sync per
    step; the progress bar's loss display costs the same.) Ours because Lightning's nearest piece,
    ``EarlyStopping(check_finite=True)``, checks a monitored metric only when it is logged for the
    epoch or validation, after the step's checkpoints.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"the training loss is {loss.item()} at step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {batch_idx}); stopped without saving it. Lower the learning rate or check the data; "
                "the last checkpoint saved before this step is unchanged"
            )
