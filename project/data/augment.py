"""Batched augmentation with per-image randomness, run on whatever device the batch is on.

torchvision's transforms applied to a batch draw one random parameter for the whole batch; this
draws one per image, with no per-image Python work.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift_and_flip(
    images: Tensor, padding: int, mirror: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """Each image shifted by its own random offset in [-padding, padding] on each axis, and
    mirrored left-right where ``mirror`` (one bool per image, or None for none) is True.

    Per image, torchvision's ``RandomCrop(size, padding, padding_mode="reflect")`` followed by a
    horizontal flip. Reflected borders, as airbench94 uses, look more like real images than black
    ones. Two gathers (rows, then columns, mirrored or not) do all of it. Shifts are drawn from
    ``generator`` (on the images' device) if given.
    """
    n, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect") if padding else images
    top, left = torch.randint(0, 2 * padding + 1, (2, n, 1), device=device, generator=generator)
    rows = (top + torch.arange(height, device=device)).view(n, 1, height, 1)
    padded = padded.gather(2, rows.expand(n, channels, height, width + 2 * padding))
    cols = left + torch.arange(width, device=device)
    if mirror is not None:
        cols = torch.where(mirror.view(n, 1), cols.flip(1), cols)
    return padded.gather(3, cols.view(n, 1, 1, width).expand(n, channels, height, width))
