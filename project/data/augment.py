"""Batched augmentation with per-image randomness, run on whatever device the batch is on.

torchvision's transforms applied to a batch draw one random parameter for the whole batch; this
draws one per image, with no per-image Python work.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


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


def random_resized_crop(
    images: Tensor,
    size: int,
    scale: tuple[float, float],
    mirror: Tensor | None,
    generator: torch.Generator | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Each image's own random crop, resized to ``size`` x ``size`` (float32, the input's value range),
    and mirrored left-right where ``mirror`` is True.

    Per image, torchvision's ``RandomResizedCrop(size, scale, ratio)``: the crop covers a fraction
    of the image's area drawn from ``scale`` and has an aspect ratio drawn log-uniformly from
    ``ratio``, at a uniform position. torchvision redraws a crop that does not fit up to 10 times;
    here its sides are clipped to the image instead, so the draw is one vectorized step. All crops
    are resampled at once by ``roi_align``: bilinear, averaging ceil(crop side / size) samples per
    output pixel on each axis, which smooths a downscale as antialiasing does.
    """
    n, _, height, width = images.shape
    device = images.device
    uniform = torch.rand(n, 4, device=device, generator=generator)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform[:, 0])
    log_low, log_high = torch.log(torch.tensor(ratio, device=device))
    aspect = torch.exp(log_low + (log_high - log_low) * uniform[:, 1])
    crop_w = torch.sqrt(area * aspect).clamp(1, width)
    crop_h = torch.sqrt(area / aspect).clamp(1, height)
    left = (width - crop_w) * uniform[:, 2]
    top = (height - crop_h) * uniform[:, 3]
    boxes = torch.stack([torch.arange(n, device=device, dtype=left.dtype), left, top, left + crop_w, top + crop_h], 1)
    crops = roi_align(images.float(), boxes, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    if mirror is not None:
        crops = torch.where(mirror.view(n, 1, 1, 1), crops.flip(3), crops)
    return crops


def center_crop(images: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` of each image (torchvision's ``CenterCrop``); unchanged if already that size."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]
