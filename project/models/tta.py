"""Test-time augmentation: average the logits over mirrored and shifted copies of each image."""

import torch.nn.functional as F
from torch import Tensor, nn


def logits_with_tta(network: nn.Module, images: Tensor, level: int) -> Tensor:
    """airbench94's TTA. Level 0: the images as they are; 1: also mirrored (weights 1/2, 1/2);
    2: also shifted one pixel up-left and down-right, each mirrored (weights 1/4, 1/4, 1/8 x 4)."""
    if level == 0:
        return network(images)
    mirrored = 0.5 * network(images) + 0.5 * network(images.flip(-1))
    if level == 1:
        return mirrored
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
    shifted_logits = sum(0.5 * network(x) + 0.5 * network(x.flip(-1)) for x in shifted) / 2
    return 0.5 * mirrored + 0.5 * shifted_logits
