"""decode_image on files of each kind PIL gets wrong by default, checked pixel by pixel."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from project.data.decode import _rgb, decode_image
from project.errors import UsageError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def bands(height: int, *widths_and_colours: tuple[int, tuple[int, ...]], mode: str = "RGB") -> Image.Image:
    """Vertical bands, left to right, of the given widths and colours."""
    image = Image.new(mode, (sum(w for w, _ in widths_and_colours), height))
    left = 0
    for width, colour in widths_and_colours:
        image.paste(colour, (left, 0, left + width, height))
        left += width
    return image


def close(pixel, colour, tolerance=12) -> bool:
    return bool(np.abs(np.asarray(pixel, dtype=int) - colour).max() <= tolerance)


def png_16_bit_rgb(path, rgb: tuple[int, int, int], size=(6, 4)) -> None:
    """A 48-bit RGB PNG, which PIL cannot write, written by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + np.tile(np.array(rgb, ">u2"), size[0]).tobytes()  # filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", *size, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size[1])) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_a_rotated_phone_photo_comes_out_upright(tmp_path, orientation, stored_as):
    upright = bands(40, (30, RED), (30, BLUE))  # 60 x 40: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: how to turn the stored pixels to show them
    upright.transpose(stored_as).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    out = decode_image(str(tmp_path / "photo.jpg"), 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert close(out[10, 2], RED) and close(out[10, 17], BLUE), out[10, [2, 17]]


def test_the_short_side_is_resized_and_the_long_side_center_cropped(tmp_path):
    portrait = Image.new("RGB", (40, 120), GREEN)  # 40 x 120: green top and bottom, red then blue in the middle
    portrait.paste(RED, (0, 40, 20, 80))
    portrait.paste(BLUE, (20, 40, 40, 80))
    portrait.save(tmp_path / "tall.png")
    out = decode_image(str(tmp_path / "tall.png"), 16)
    assert out.shape == (16, 16, 3)
    # Rows 1 and 14, not 0 and 15: the filter reaches a pixel past the crop, as resizing then cropping does.
    assert close(out[1, 3], RED, 0) and close(out[14, 3], RED, 0) and close(out[1, 12], BLUE, 0), out[[1, 14]]


@pytest.mark.parametrize(
    "side, drafted", [(300, (500, 375)), (375, (500, 375)), (376, (1000, 750)), (1500, (2000, 1500))]
)
def test_large_jpegs_are_decoded_at_a_reduced_scale_never_below_side(tmp_path, monkeypatch, side, drafted):
    # 2000 x 1500: the centre 1500 columns are red then blue, the 250 on each side green and cropped away.
    bands(1500, (250, GREEN), (750, RED), (750, BLUE), (250, GREEN)).save(tmp_path / "big.jpg", quality=95)
    sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = decode_image(str(tmp_path / "big.jpg"), side)
    assert sizes == [drafted]  # 1/4, 1/4, 1/2 and full scale
    assert out.shape == (side, side, 3)
    row, half = out[side // 2], side // 2
    assert close(row[2], RED) and close(row[half - 3], RED), row[[2, half - 3]]
    assert close(row[half + 2], BLUE) and close(row[side - 3], BLUE), row[[half + 2, side - 3]]


def test_small_images_are_upscaled_the_same_way(tmp_path):
    bands(4, (4, GREEN), (2, RED), (2, BLUE), (4, GREEN)).save(tmp_path / "small.png")  # 12 x 4; centre 4 x 4 kept
    out = decode_image(str(tmp_path / "small.png"), 16)
    assert out.shape == (16, 16, 3)
    assert close(out[8, 4], RED, 0) and close(out[8, 11], BLUE, 0), out[8]


@pytest.mark.parametrize("mode, suffix", [("I;16", "png"), ("I;16B", "tif"), ("I", "tif")])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped_white(tmp_path, mode, suffix):
    Image.new(mode, (6, 4), 32768).save(tmp_path / f"deep.{suffix}")
    assert Image.open(tmp_path / f"deep.{suffix}").mode == mode
    out = decode_image(str(tmp_path / f"deep.{suffix}"), 4)
    assert (out == 128).all(), out[0, 0]


def test_a_48_bit_png_reads_as_its_high_bytes_like_16_bit_gray(tmp_path):
    # PIL reads 48-bit RGB PNGs as mode RGB, keeping each value's high byte: nothing for decode_image to do, and
    # the same >> 8 as 16-bit gray, which this pins down.
    png_16_bit_rgb(tmp_path / "deep.png", (0x8000, 0x40FF, 0xFF00))
    assert Image.open(tmp_path / "deep.png").mode == "RGB"
    assert (decode_image(str(tmp_path / "deep.png"), 4) == (0x80, 0x40, 0xFF)).all()


@pytest.mark.parametrize("value, expected", [(0.5, 128), (1.0, 255), (200.0, 200), (300.0, 255), (-5.0, 0)])
def test_float_images_in_0_1_are_scaled_by_255_others_clipped(tmp_path, value, expected):
    Image.new("F", (4, 4), value).save(tmp_path / "float.tif")
    assert (decode_image(str(tmp_path / "float.tif"), 4) == expected).all()


def test_a_cmyk_jpeg_keeps_its_colours(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=95)  # PIL writes Adobe CMYK
    pixel = decode_image(str(tmp_path / "cyan.jpg"), 8)[4, 4]
    assert close(pixel, (0, 255, 255)), pixel


def transparent(mode: str) -> Image.Image:
    """4 x 4 in ``mode``: the left half transparent, its colour black; the right half opaque."""
    if mode in ("RGBA", "LA", "PA"):
        opaque = {"RGBA": (*RED, 255), "LA": (76, 255), "PA": (1, 255)}[mode]
        image = bands(4, (2, (0,) * len(mode)), (2, opaque), mode=mode)
    else:  # a transparent colour (PNG tRNS, GIF)
        image = bands(4, (2, 0 if mode != "RGB" else (0, 0, 0)), (2, {"P": 1, "L": 200, "RGB": RED}[mode]), mode=mode)
        image.info["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    if mode in ("P", "PA"):
        image.putpalette([0, 0, 0, *RED])
    return image


@pytest.mark.parametrize(
    "mode, suffix, opaque",
    [
        ("RGBA", "png", RED),
        ("LA", "png", (76, 76, 76)),
        ("PA", "tif", RED),
        ("P", "png", RED),
        ("P", "gif", RED),
        ("L", "png", (200, 200, 200)),
        ("RGB", "png", RED),
    ],
)
def test_transparent_pixels_are_composited_onto_white(tmp_path, mode, suffix, opaque):
    transparent(mode).save(tmp_path / f"clear.{suffix}")
    image = Image.open(tmp_path / f"clear.{suffix}")
    assert image.mode == mode and image.has_transparency_data
    out = decode_image(str(tmp_path / f"clear.{suffix}"), 4)
    assert (out[:, 0] == WHITE).all() and (out[:, 3] == opaque).all(), out[0]


def test_half_transparent_red_is_mixed_with_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "pink.png")
    assert close(decode_image(str(tmp_path / "pink.png"), 4)[0, 0], (255, 127, 127), 1)


@pytest.mark.parametrize("mode, suffix", [("L", "png"), ("1", "png"), ("1", "bmp"), ("P", "png")])
def test_gray_bilevel_and_palette_images_become_rgb(tmp_path, mode, suffix):
    image = bands(4, (2, 0), (2, {"L": 90, "1": 255, "P": 1}[mode]), mode=mode)
    if mode == "P":
        image.putpalette([*GREEN, *BLUE])
    image.save(tmp_path / f"plain.{suffix}")
    out = decode_image(str(tmp_path / f"plain.{suffix}"), 4)
    left, right = {"L": ((0, 0, 0), (90, 90, 90)), "1": ((0, 0, 0), WHITE), "P": (GREEN, BLUE)}[mode]
    assert (out[:, 0] == left).all() and (out[:, 3] == right).all(), out[0]


@pytest.mark.parametrize("mode, opaque", [("La", (90, 90, 90)), ("RGBa", RED)])
def test_premultiplied_alpha_is_composited_onto_white_too(mode, opaque):
    # No PIL writer makes these modes (RGBa comes from TIFFs with associated alpha), so the conversion is checked.
    image = bands(4, (2, (0,) * len(mode)), (2, (*opaque[: len(mode) - 1], 255)), mode=mode)
    out = np.asarray(_rgb(image))
    assert (out[:, 0] == WHITE).all() and (out[:, 3] == opaque).all(), out[0]


def test_unreadable_files_are_a_usage_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "text.jpg").write_text("not an image")
    bands(64, (64, RED)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    for name in ("text.jpg", "cut.jpg", "missing.png"):
        with pytest.raises(UsageError, match=f"cannot read image .*{name}: "):
            decode_image(str(tmp_path / name), 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice that: a decompression bomb
    with pytest.raises(UsageError, match="cannot read image .*whole.jpg: .*decompression bomb"):
        decode_image(str(tmp_path / "whole.jpg"), 8)
