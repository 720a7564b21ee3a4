"""How a LightningModule turns its configured optimizer and scheduler into what Lightning runs.

Any LightningModule gets the same wiring with one line::

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)
"""

import inspect
from typing import Any, Callable, Optional

from torch import nn
from torch.optim import Optimizer


def configure_optimizers(
    module: Any,  # a LightningModule attached to a Trainer
    optimizer: Callable[..., Optimizer],
    scheduler: Optional[Callable[..., Any]] = None,
    no_decay_lr_scale: float = 1.0,
) -> Any:
    """Build the optimizer over ``parameter_groups(module)`` and the scheduler stepping once per optimizer step.

    The group without weight decay (biases, norm weights) gets ``no_decay_lr_scale`` times the
    configured LR; both groups follow the same schedule.

    A scheduler with a ``total_steps`` argument left unset (``WarmupCosine``, torch's
    ``OneCycleLR``) gets ``trainer.estimated_stepping_batches``, which follows max_epochs,
    max_steps, accumulate_grad_batches, limit_train_batches and the device count. A value set in
    the config or on the command line wins.
    """
    opt = optimizer(parameter_groups(module))
    for group in opt.param_groups:
        if _no_decay(group["params"][0]):
            group["lr"] *= no_decay_lr_scale
    if scheduler is None:
        return opt
    if not _total_steps_unset(scheduler):
        lr_scheduler = scheduler(opt)
    else:
        total_steps = module.trainer.estimated_stepping_batches
        try:
            lr_scheduler = scheduler(opt, total_steps=total_steps)
        except ValueError as err:
            raise ValueError(f"{err} (total_steps={total_steps} is the trainer's estimated_stepping_batches, "
                             "the run's length in optimizer steps)") from None
    # "step", not Lightning's default "epoch": a per-step schedule stepped per epoch is the
    # classic silent bug (Lightning issues #15340, #20436). Periods of any scheduler are in steps.
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step", "frequency": 1}}


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Two groups: weights that get weight decay, and biases and normalization weights that don't.

    Both follow the same schedule.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in trainable if not _no_decay(p)]
    no_decay = [p for p in trainable if _no_decay(p)]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _total_steps_unset(factory: Callable[..., Any]) -> bool:
    # jsonargparse hands over functools.partial(<instantiator>, cls, **every_init_arg), whose
    # signature says nothing; a class, or a partial of a class, shows its defaults in its signature.
    configured = getattr(factory, "keywords", {})
    if "total_steps" in configured:
        return configured["total_steps"] is None
    try:
        parameter = inspect.signature(factory).parameters.get("total_steps")
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return parameter is not None and parameter.default is None


def _no_decay(parameter: nn.Parameter) -> bool:
    return parameter.ndim < 2  # the one-dimensional parameters are the biases and norm scales
