"""A trained classifier as one plain nn.Module for deployment: uint8 images in, class probabilities out."""

import torch
from torch import Tensor, nn

from project.models.tta import logits_with_tta


class DeployableClassifier(nn.Module):
    """``network`` with the data path's normalization before it and a softmax after it.

    Takes images as they are stored, uint8 ``(N, C, H, W)`` in 0-255, normalizes them with the
    training set's per-channel ``mean`` and ``std`` (``(1, C, 1, 1)``) exactly as
    ``InMemoryImageDataModule.prepare_batch`` does, and returns class probabilities ``(N, classes)``,
    averaged over ``tta_level``'s mirrored and shifted copies as ``predict`` does.
    """

    def __init__(self, network: nn.Module, mean: Tensor, std: Tensor, tta_level: int = 0) -> None:
        super().__init__()
        self.network, self.tta_level = network, tta_level
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, images: Tensor) -> Tensor:
        # The data path's fused form, so that the exported network sees bit-identical inputs.
        normalized = torch.addcmul(-self.mean / self.std, images.float(), 1 / self.std)
        return logits_with_tta(self.network, normalized, self.tta_level).softmax(dim=-1)
