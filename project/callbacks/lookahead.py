"""Lookahead: every few steps, pull the weights toward a slow moving average of themselves."""

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from project.errors import UsageError


class Lookahead(Callback):
    """airbench94's weight averaging (arXiv 2404.00498): every ``every_n_steps`` optimizer steps,
    ``slow = lerp(slow, weights, 1 - d)`` and then ``weights = slow``, with
    ``d = decay * (step / total_steps) ** 3``: no averaging early, more as training ends. Training
    ends on the average (the last update's, if the last step is not an update step). Applies to every
    floating-point tensor of the state dict (BatchNorm statistics included), and the average travels
    in the checkpoint. Ours because Lightning's ``WeightAveraging`` / ``EMAWeightAveraging`` keep an
    average beside the training weights, for evaluation; Lookahead moves the training weights themselves.

    Args:
        every_n_steps: Optimizer steps between updates; airbench94 uses 5.
        decay: The decay at the end of training; airbench94 uses 0.95 ** 5.
    """

    def __init__(self, every_n_steps: int = 5, decay: float = 0.95**5) -> None:
        if every_n_steps < 1:
            raise UsageError(f"Lookahead every_n_steps must be >= 1, got {every_n_steps}")
        if not 0.0 <= decay <= 1.0:
            raise UsageError(f"Lookahead decay must be in [0, 1], got {decay}")
        self.every_n_steps, self.decay = every_n_steps, decay
        self.slow: dict[str, torch.Tensor] = {}
        self._last_step = -1

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if step == self._last_step:  # accumulating gradients: no optimizer step since the last batch
            return
        self._last_step = step
        if step % self.every_n_steps == 0:
            self._update(pl_module, decay=self.decay * (step / total) ** 3)
        elif step == total:  # end of training between updates: the weights become the last average
            self._update(pl_module, decay=1.0)

    @torch.no_grad()
    def _update(self, pl_module: LightningModule, decay: float) -> None:
        weights = {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        if not self.slow:
            self.slow = {k: v.detach().clone() for k, v in weights.items()}
        for key, value in weights.items():
            self.slow[key] = self.slow[key].to(value.device)  # no-op but after loading a checkpoint
            self.slow[key].lerp_(value, 1 - decay)
            value.copy_(self.slow[key])

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    def load_state_dict(self, state_dict: dict) -> None:
        self.slow = state_dict["slow"]
