"""One image file to the square RGB array the image folder caches, whatever the file's mode.

``decode_image`` returns ``(side, side, 3)`` uint8 RGB: upright, the short side resized to ``side``
(bilinear, antialiased) and the long side center-cropped, small images upscaled alike. Each step is there
because PIL's plain ``open(path).convert("RGB").resize(...)`` gets a common kind of file wrong:

- EXIF orientation: phones store photos sideways with a tag saying how to turn them, which PIL ignores.
- 16-bit images (modes ``I;16*`` and ``I``: 16-bit PNGs, TIFFs, PGMs): ``convert("RGB")`` clips them at 255,
  turning nearly every pixel white. They are scaled by ``>> 8``, as PIL itself reads 48- and 64-bit RGB(A)
  PNGs, so that a 16-bit gray and a 48-bit RGB file of one picture decode alike.
- Float images (mode ``F``, float TIFFs): ``convert("RGB")`` reads them on a 0-255 scale, so the usual 0-1
  floats come out black. An image within [0, 1] is scaled by 255; any other is clipped to [0, 255], PIL's
  scale; NaN is 0.
- Transparency (RGBA, LA, PA, RGBa, La, and P, L or RGB with a transparent colour): ``convert("RGB")`` drops
  the alpha and shows whatever colour transparent pixels hold, often black. They are composited onto white,
  the background transparent product photos, logos and icons are drawn to be seen on.
- Everything else (L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX) goes through ``convert("RGB")``, right for them: PIL
  already undoes the inverted CMYK of Adobe JPEGs on reading. Embedded ICC profiles are ignored.
- Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (``draft``) where the short side stays at least ``side``:
  several times faster, and the image is resized anyway.
"""

import numpy as np
from PIL import Image, ImageOps

from project.data.storage import is_remote, open_image
from project.errors import UsageError

RESIZE_FILTER = "bilinear"  # the filter named by the export contract: PIL's antialiased bilinear resize


def decode_image(path: str, side: int) -> np.ndarray:
    """The image at ``path`` as ``(side, side, 3)`` uint8 RGB; a ``UsageError`` if it cannot be read.

    Images over PIL's ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb to PIL) count as unreadable: raise
    that limit to read larger ones.
    """
    try:
        with Image.open(open_image(path) if is_remote(path) else path) as image:
            image.draft("RGB", (side, side))  # JPEG only; PIL keeps both sides at least side
            ImageOps.exif_transpose(image, in_place=True)
            return np.asarray(_square(_rgb(image), side), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # unidentified, truncated, corrupt, huge
        raise UsageError(f"cannot read image {path}: {err}") from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I: 16-bit values (a 16-bit tRNS is dropped)
        image = Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image), nan=0.0, posinf=255.0, neginf=0.0)
        if values.min() >= 0 and values.max() <= 1:
            values = values * 255
        image = Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8))
    elif image.mode == "La":  # premultiplied; PIL converts it to LA only
        image = image.convert("LA")
    if image.has_transparency_data:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return image.convert("RGB")


def _square(image: Image.Image, side: int) -> Image.Image:
    # Resizing the centre square (box) of the image is resizing its short side to side, then center-cropping.
    width, height = image.size
    short = min(width, height)
    left, top = (width - short) / 2, (height - short) / 2
    box = (left, top, left + short, top + short)
    # reducing_gap=3: a box reduction first where the image shrinks over 6 times, then bilinear: several times
    # faster, and within one level of the plain resize (PIL's docs: indistinguishable in most cases).
    return image.resize((side, side), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
