"""Batched augmentation with per-sample randomness, run on whatever device the batch is on.

torchvision's transforms applied to a batch draw one random parameter for the whole batch; these
draw one per image, with no per-image Python work.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Each image shifted by its own random offset in [-padding, padding] on each axis.

    torchvision's ``RandomCrop(size, padding=padding, padding_mode="reflect")``, per image.
    Reflected borders, as airbench94 uses, look more like real images than black ones.
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect").permute(0, 2, 3, 1)
    top = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=images.device)
    left = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=images.device)
    rows = top + torch.arange(height, device=images.device).view(1, height, 1)
    cols = left + torch.arange(width, device=images.device).view(1, 1, width)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(images: Tensor) -> Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
