"""How a LightningModule turns its configured optimizer and scheduler into what Lightning runs.

Any LightningModule gets the same wiring with one line::

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)
"""

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from project.errors import UsageError


def configure_optimizers(
    module: Any,  # a LightningModule attached to a Trainer
    optimizer: Callable[..., Optimizer],
    scheduler: Callable[..., Any] | None = None,
    bias_lr_scale: float = 1.0,
    bias_weight_decay: bool = False,
    body_lr_scale: float = 1.0,
) -> Any:
    """Build the optimizer over ``parameter_groups(module)`` and the scheduler stepping once per optimizer step.

    The groups of one-dimensional parameters (biases, norm weights) get ``bias_lr_scale`` times the
    configured LR, and weight decay only with ``bias_weight_decay``; then as much decay per step as
    the weights get (torch multiplies weight decay by the LR, so the group's factor is divided by
    the scale). With ``body_lr_scale`` other than 1, the parameters of ``module.network`` outside its
    ``head`` (a pretrained body under a new head) get their own groups at that multiple of the LR.
    Every group follows the same schedule, each from its own base LR.

    A scheduler with a ``total_steps`` argument left unset (``WarmupCosine``, torch's
    ``OneCycleLR``) gets ``trainer.estimated_stepping_batches``, which follows max_epochs,
    max_steps, accumulate_grad_batches, limit_train_batches and the device count. A value set in
    the config or on the command line wins. A debugging run (``fast_dev_run``, ``overfit_batches``)
    skips the scheduler, with a warning: a schedule sized for the real run cannot fit in its few steps.
    """
    if bias_lr_scale <= 0:
        raise UsageError(f"bias_lr_scale must be > 0, got {bias_lr_scale}")
    if body_lr_scale < 0:
        raise UsageError(f"body_lr_scale must be >= 0, got {body_lr_scale}")
    body = body_parameters(module) if body_lr_scale != 1 else set()
    opt = _build_optimizer(optimizer, parameter_groups(module, bias_weight_decay, body))
    for group in opt.param_groups:
        if _is_bias(group["params"][0]):
            group["lr"] *= bias_lr_scale
            if group.get("weight_decay"):
                group["weight_decay"] /= bias_lr_scale
        if group["params"][0] in body:
            group["lr"] *= body_lr_scale
    if scheduler is None:
        return opt
    debugging = [flag for flag in ("fast_dev_run", "overfit_batches") if getattr(module.trainer, flag)]
    if debugging:
        warnings.warn(f"trainer.{debugging[0]} is set: this debugging run skips the LR schedule (constant base LR)")
        return opt
    if not _total_steps_unset(scheduler):
        lr_scheduler = scheduler(opt)
    else:
        total_steps = module.trainer.estimated_stepping_batches
        try:
            lr_scheduler = scheduler(opt, total_steps=total_steps)
        except UsageError as err:
            if err.setting != "total_steps":
                raise
            raise UsageError(
                f"{err} (total_steps={total_steps} is the trainer's estimated_stepping_batches, "
                "the run's length in optimizer steps)",
                "total_steps",
            ) from None
    # "step", not Lightning's default "epoch": a per-step schedule stepped per epoch is the
    # classic silent bug (Lightning issues #15340, #20436). Periods of any scheduler are in steps.
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step", "frequency": 1}}


def check_settings(optimizer: Callable[..., Optimizer], scheduler: Callable[..., Any] | None = None) -> None:
    """Build the optimizer and the scheduler once over a stand-in parameter, so that a setting either
    refuses (a negative LR or warmup, a floor above 1) is reported when the model is built: before
    any data is loaded or any step is taken."""
    stand_in = _build_optimizer(optimizer, [nn.Parameter(torch.zeros(2, 2))])
    if scheduler is None:
        return
    try:
        scheduler(stand_in, total_steps=2**62) if _total_steps_unset(scheduler) else scheduler(stand_in)
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(f"model.scheduler: {err}") from err


def _build_optimizer(optimizer: Callable[..., Optimizer], params: list) -> Optimizer:
    try:
        return optimizer(params)
    except ValueError as err:  # torch's optimizers refuse a bad setting with a ValueError
        raise UsageError(f"model.optimizer: {err}") from err


def parameter_groups(module: nn.Module, bias_weight_decay: bool = False, body: set | None = None) -> list[dict]:
    """Two groups: the weights, and the biases and normalization weights, which get no weight decay
    unless ``bias_weight_decay`` (the usual rule for AdamW; airbench94 decays them). The parameters in
    ``body`` get two groups of their own, after those.
    """
    body = body or set()
    trainable = [p for p in module.parameters() if p.requires_grad]
    groups = []
    for part in ([p for p in trainable if p not in body], [p for p in trainable if p in body]):
        weights = {"params": [p for p in part if not _is_bias(p)]}
        biases = {"params": [p for p in part if _is_bias(p)]}
        if not bias_weight_decay:
            biases["weight_decay"] = 0.0
        groups += [group for group in (weights, biases) if group["params"]]
    return groups


def body_parameters(module: nn.Module) -> set:
    """The parameters of ``module.network`` (or ``module``) outside its ``head``: a pretrained body."""
    network = getattr(module, "network", module)
    head = getattr(network, "head", None)
    if not isinstance(head, nn.Module):
        raise UsageError(
            f"body_lr_scale: the network {type(network).__name__} has no `head` attribute, the classifier whose "
            "parameters keep the full LR; name it `head`, or leave body_lr_scale at 1"
        )
    in_head = set(head.parameters())
    return {p for p in network.parameters() if p not in in_head}


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


def _is_bias(parameter: nn.Parameter) -> bool:
    return parameter.ndim < 2  # the one-dimensional parameters are the biases and norm scales
