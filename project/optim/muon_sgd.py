"""Muon for convolution filters, Nesterov SGD for everything else: one plain torch optimizer."""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from project.errors import UsageError


class MuonSGD(Optimizer):
    """airbench94_muon's optimizer pair (Keller Jordan, 2024: 94% on CIFAR-10 in 8 epochs, where
    airbench94's SGD needs 9.9) as one optimizer, because Lightning's automatic optimization steps one.

    Filter banks (parameters with 4 dims: out x in x kh x kw) take Muon steps. Each step:

    1. rescales the bank to Frobenius norm ``sqrt(out)``: with the scale fixed, ``filter_lr`` is an
       angle per step, and nothing else (no weight decay) is needed to hold the weights' size;
    2. updates a Nesterov momentum of the gradient (``filter_momentum``);
    3. replaces that, seen as an ``out x (in*kh*kw)`` matrix, by an approximately orthogonal one
       (``orthogonalize``): every direction the gradient points in moves the filters about as much;
    4. subtracts ``filter_lr`` times it.

    Every other parameter (biases, the linear head) steps as ``torch.optim.SGD`` with ``lr``,
    ``momentum``, ``nesterov`` and ``weight_decay`` would. ``torch.optim.Muon`` takes matrices only
    and neither normalizes nor pairs with SGD, hence this class.

    Each given param group is split in two, its filters and the rest, so a scheduler scales both
    LRs together (the filters from ``filter_lr``, the rest from ``lr``).

    Args:
        params: Parameters or param groups, as for any torch optimizer.
        lr: SGD learning rate of the parameters that are not filters.
        momentum: Their momentum.
        nesterov: Nesterov momentum for them (the filters always use it).
        weight_decay: Their weight decay, as torch's SGD applies it (``lr * weight_decay`` per step).
        filter_lr: The filters' step size, for banks of norm ``sqrt(out)``; airbench94_muon uses 0.24.
        filter_momentum: The filters' momentum; airbench94_muon uses 0.6.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        filter_lr: float = 0.02,
        filter_momentum: float = 0.6,
    ) -> None:
        for name, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("filter_lr", filter_lr),
            ("filter_momentum", filter_momentum),
        ):
            if value < 0:
                raise UsageError(f"MuonSGD {name} must be >= 0, got {value}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, orthogonalize=False)
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        split = []
        for group in groups:
            params_of_group = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
            split.append({**group, "params": [p for p in params_of_group if p.ndim != 4]})
            split.append(
                {
                    **group,
                    "params": [p for p in params_of_group if p.ndim == 4],
                    "lr": filter_lr,
                    "momentum": filter_momentum,
                    "nesterov": True,
                    "weight_decay": 0.0,
                    "orthogonalize": True,
                }
            )
        super().__init__([group for group in split if group["params"]], defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buffer.mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if group["orthogonalize"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalize(update.reshape(len(p), -1)).view_as(p)
                p.add_(update, alpha=-group["lr"])
        return loss


def orthogonalize(matrix: Tensor, steps: int = 3) -> Tensor:
    """About ``U @ V.T`` for ``matrix = U @ diag(S) @ V.T``: Newton-Schulz iterations of a quintic
    whose coefficients (Keller Jordan's) are tuned for speed, not convergence: singular values end
    up between about 0.5 and 1.5 instead of at 1, which trains as well. Computed in float32."""
    x = matrix.float()
    x = x / (x.norm() + 1e-7)  # all singular values <= 1, where the iteration is stable
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
    return (x if wide else x.T).to(matrix.dtype)
