"""Batched augmentation with per-image randomness, run on whatever device the batch is on.

torchvision's transforms applied to a batch draw one random parameter for the whole batch; this
draws one per image, with no per-image Python work.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import resized_crop


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
    """Each image's own random crop, resized to ``size`` x ``size`` (same dtype), and mirrored left-right
    where ``mirror`` is True.

    Per image, torchvision's ``RandomResizedCrop(size, scale, ratio)`` on a tensor: the crop covers a
    fraction of the image's area drawn from ``scale`` and has an aspect ratio drawn log-uniformly from
    ``ratio``, at a uniform whole-pixel position, resized with antialiased bilinear interpolation
    (``torchvision.transforms.v2.functional.resized_crop``). torchvision redraws a crop that does not
    fit up to 10 times; here its sides are clipped to the image instead, so the draw is one vectorized
    step for the batch (and one transfer of the boxes to the host). Each resize runs on its own image:
    on uint8 images torch's antialiased uint8 kernel, 15x faster on a CPU than resampling the batch in
    float with one ``roi_align``.
    """
    n, _, height, width = images.shape
    uniform = torch.rand(n, 4, device=images.device, generator=generator).cpu().double()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform[:, 0])
    log_low, log_high = torch.log(torch.tensor(ratio, dtype=torch.float64))
    aspect = torch.exp(log_low + (log_high - log_low) * uniform[:, 1])
    crop_w = torch.sqrt(area * aspect).round().clamp(1, width).long()
    crop_h = torch.sqrt(area / aspect).round().clamp(1, height).long()
    left = ((width - crop_w + 1) * uniform[:, 2]).long()  # torchvision: randint(0, width - w + 1)
    top = ((height - crop_h + 1) * uniform[:, 3]).long()
    crops = torch.cat(
        [
            resized_crop(image[None], t, le, h, w, [size, size], antialias=True)
            for image, t, le, h, w in zip(images, top.tolist(), left.tolist(), crop_h.tolist(), crop_w.tolist())
        ]
    )
    if mirror is not None:
        crops = torch.where(mirror.view(n, 1, 1, 1), crops.flip(3), crops)
    return crops


def center_crop(images: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` of each image (torchvision's ``CenterCrop``); unchanged if already that size."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]
