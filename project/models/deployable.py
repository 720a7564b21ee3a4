"""A trained classifier as one plain nn.Module for deployment: uint8 images in, class probabilities out."""

from torch import Tensor, nn

from project.data.in_memory import normalize
from project.models.tta import logits_with_tta


class DeployableClassifier(nn.Module):
    """``network`` with the data path's normalization before it and a softmax after it.

    Takes images as they are stored, uint8 ``(N, C, H, W)`` in 0-255, normalizes them with the training
    set's per-channel ``mean`` and ``std`` (``(1, C, 1, 1)``) by the data path's own ``normalize``, and
    returns class probabilities ``(N, classes)``, averaged over ``tta_level``'s mirrored and shifted
    copies as ``predict`` does.
    """

    def __init__(self, network: nn.Module, mean: Tensor, std: Tensor, tta_level: int = 0) -> None:
        super().__init__()
        self.network, self.tta_level = network, tta_level
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, images: Tensor) -> Tensor:
        return logits_with_tta(self.network, normalize(images, self.mean, self.std), self.tta_level).softmax(dim=-1)
