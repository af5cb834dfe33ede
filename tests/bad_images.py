"""Real bad and odd image bytes for tests, made with Pillow (or by hand, for the bomb).

Import like helpers: ``from bad_images import BAD_IMAGE_CASES, ODD_MODE_CASES``.

``BAD_IMAGE_CASES`` maps an object name (usable as the key under a prefix) to a
:class:`BadImage`: bytes that ``probe_image`` must refuse, and a substring of the
``InvalidImageError.problem`` it gives. ``ODD_MODE_CASES`` maps a name to an
:class:`OddImage`: bytes in an unusual pixel mode (or EXIF-rotated) that must decode to a
correct RGB image, with the colours expected at a few points of the displayed image.

Every odd image is displayed as :data:`SIZE` (64 x 48) and is made of large flat regions
of known colours, so a resize to 224 x 224 keeps the colour at the sampled points; only
JPEG's loss needs a tolerance. Everything here is deterministic and cached.

Note that opening ``bomb-10000x10000.png`` makes Pillow emit a ``DecompressionBombWarning``
(it is over Pillow's warning threshold but under its hard limit); our own check refuses it.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Any, NamedTuple

import numpy as np
from helpers import photo_variant, sample_image_bytes
from PIL import Image

RGB = tuple[int, int, int]
Point = tuple[float, float, RGB]  # (x, y) as fractions of the displayed image, and its colour

#: Displayed (width, height) of every odd-mode image.
SIZE = (64, 48)
RED: RGB = (200, 30, 30)
BLUE: RGB = (30, 90, 200)
GREEN: RGB = (40, 170, 60)
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
DARK, LIGHT = 40, 200  # gray levels used by the grayscale cases
JPEG_TOLERANCE = 4  # max per-channel error at a region's centre, JPEG quality 95


class BadImage(NamedTuple):
    """Bytes ``probe_image`` must refuse, and a substring of the problem it reports."""

    data: bytes
    problem: str


class OddImage(NamedTuple):
    """Bytes that must decode to RGB, and what the upright RGB image must look like."""

    data: bytes
    mode: str  # the mode Image.open reports for the stored bytes
    size: tuple[int, int]  # displayed (width, height), after EXIF orientation
    points: tuple[Point, ...]  # expected RGB at fractional (x, y) of the displayed image
    tolerance: int  # max absolute per-channel error (0 for lossless formats)


def _encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _gray(level: int) -> RGB:
    return (level, level, level)


def _halves(mode: str, left: Any, right: Any, size: tuple[int, int] = SIZE) -> Image.Image:
    """A ``mode`` image of ``size``: ``left`` fills the left half, ``right`` the right half."""
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def _wide_halves(dtype: str, left: float, right: float) -> Image.Image:
    """A 16/32-bit or float grayscale image (mode from the numpy dtype) in two halves."""
    values = np.full((SIZE[1], SIZE[0]), left, dtype=dtype)
    values[:, SIZE[0] // 2 :] = right
    return Image.fromarray(values)


def _halves_expected(left: RGB, right: RGB) -> tuple[Point, ...]:
    return ((0.25, 0.5, left), (0.75, 0.5, right))


# ---------------------------------------------------------------------------------------
# Bad input


def truncated_jpeg() -> bytes:
    """The first half of a real photo JPEG (starts like a JPEG, ends mid-scan)."""
    data = sample_image_bytes("image1.jpg")
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    """The first half of a real PNG (valid header, IDAT cut short)."""
    data = sample_image_bytes("image4.png")
    return data[: len(data) // 2]


def zero_bytes() -> bytes:
    """An empty object (0 bytes), as a failed upload leaves behind."""
    return b""


def text_named_like_image() -> bytes:
    """Plain text bytes, to be stored under an image extension such as ``.jpg``."""
    return b"A caption that was saved with the wrong extension.\n"


def text_file() -> bytes:
    """Plain text bytes for a non-image name (``readme.txt``) under the images prefix."""
    return b"These images were exported on 2024-05-01. Do not edit.\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@functools.cache
def decompression_bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit all-black PNG of width x height: tens of KB, width*height bytes decoded."""
    # Built chunk by chunk: Pillow would need the whole image in memory to save it. Pillow
    # opens it, and with its limits off it decodes completely (a real bomb, not a bad header).
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray, no interlace
    row = bytes(1 + (width + 7) // 8)  # filter type 0, then all-zero packed pixels
    rows_per_step = max(1, (1 << 20) // len(row))
    deflate = zlib.compressobj(9)
    idat = []
    for start in range(0, height, rows_per_step):
        idat.append(deflate.compress(row * min(rows_per_step, height - start)))
    idat.append(deflate.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(idat))
        + _png_chunk(b"IEND", b"")
    )


def same_stem_objects() -> dict[str, bytes]:
    """Two different real images whose keys share the stem ``img_0001`` in two folders."""
    return {
        "2023/img_0001.jpg": photo_variant(11),
        "2024/img_0001.png": photo_variant(12, fmt="PNG"),
    }


# ---------------------------------------------------------------------------------------
# Odd pixel modes (each decodes to left half / right half colours unless said otherwise)


def rgb_jpeg() -> bytes:
    """Control: an ordinary RGB JPEG, red left, blue right."""
    return _encode(_halves("RGB", RED, BLUE), "JPEG", quality=95)


def cmyk_jpeg() -> bytes:
    """CMYK JPEG (Pillow writes it Adobe-style: APP14 marker, inverted ink values)."""
    return _encode(_halves("RGB", RED, BLUE).convert("CMYK"), "JPEG", quality=95)


def gray_jpeg() -> bytes:
    """Grayscale (mode L) JPEG, dark left, light right."""
    return _encode(_halves("L", DARK, LIGHT), "JPEG", quality=95)


def gray_png() -> bytes:
    """Grayscale (mode L) PNG, dark left, light right."""
    return _encode(_halves("L", DARK, LIGHT), "PNG")


def gray_png_trns() -> bytes:
    """Grayscale PNG whose tRNS chunk makes the dark value (the left half) transparent."""
    return _encode(_halves("L", DARK, LIGHT), "PNG", transparency=DARK)


def bilevel_png() -> bytes:
    """1-bit (mode 1) PNG, black left, white right."""
    return _encode(_halves("1", 0, 255), "PNG")


def gray16_png() -> bytes:
    """16-bit grayscale PNG (mode I;16): 40*257 left, 200*257 right (40 and 200 in 8 bits)."""
    return _encode(_wide_halves("<u2", DARK * 257, LIGHT * 257), "PNG")


def gray16_png_trns() -> bytes:
    """16-bit grayscale PNG whose tRNS chunk makes the left half's value transparent."""
    return _encode(_wide_halves("<u2", DARK * 257, LIGHT * 257), "PNG", transparency=DARK * 257)


def gray16_big_endian_tiff() -> bytes:
    """16-bit big-endian grayscale TIFF (mode I;16B), 40*257 left, 200*257 right."""
    return _encode(_wide_halves(">u2", DARK * 257, LIGHT * 257), "TIFF")


def int32_tiff() -> bytes:
    """32-bit integer TIFF (mode I) holding 16-bit values, 40*257 left, 200*257 right."""
    return _encode(_wide_halves("<i4", DARK * 257, LIGHT * 257), "TIFF")


def int32_wide_range_tiff() -> bytes:
    """32-bit integer TIFF (mode I) with values outside 0..65535: -1000 left, 99000 right."""
    return _encode(_wide_halves("<i4", -1000, 99000), "TIFF")


def float_tiff() -> bytes:
    """32-bit float TIFF (mode F) in 0..1: 40/255 left, 200/255 right."""
    return _encode(_wide_halves("<f4", DARK / 255, LIGHT / 255), "TIFF")


def float_wide_range_tiff() -> bytes:
    """32-bit float TIFF (mode F) outside 0..1: -3.5 left, 7.25 right."""
    return _encode(_wide_halves("<f4", -3.5, 7.25), "TIFF")


def rgba_png() -> bytes:
    """RGBA PNG: left transparent (green under alpha 0), right red over 50%-alpha black."""
    im = _halves("RGBA", (*GREEN, 0), (*RED, 255))
    im.paste((0, 0, 0, 128), (SIZE[0] // 2, SIZE[1] // 2, SIZE[0], SIZE[1]))
    return _encode(im, "PNG")


def la_png() -> bytes:
    """Gray + alpha (mode LA) PNG: left half transparent, right half opaque dark gray."""
    return _encode(_halves("LA", (LIGHT, 0), (DARK, 255)), "PNG")


def _palette_halves() -> Image.Image:
    im = _halves("P", 0, 1)
    im.putpalette([*RED, *BLUE])
    return im


def palette_png() -> bytes:
    """Palette (mode P) PNG, no transparency: index 0 = red left, index 1 = blue right."""
    return _encode(_palette_halves(), "PNG")


def palette_png_trns_index() -> bytes:
    """Palette PNG whose transparent index is 0 (the red left half)."""
    return _encode(_palette_halves(), "PNG", transparency=0)


def palette_png_alpha_table() -> bytes:
    """Palette PNG with a per-entry alpha table (tRNS bytes): red alpha 0, blue alpha 255."""
    return _encode(_palette_halves(), "PNG", transparency=b"\x00\xff")


def rgb_png_trns() -> bytes:
    """RGB PNG whose tRNS colour key is red (the left half is transparent)."""
    return _encode(_halves("RGB", RED, BLUE), "PNG", transparency=RED)


def gif_transparent() -> bytes:
    """GIF (palette) whose transparent index is the red left half."""
    return _encode(_palette_halves(), "GIF", transparency=0)


def webp_rgba() -> bytes:
    """Lossless WebP with alpha: left half transparent, right half blue."""
    return _encode(_halves("RGBA", (*GREEN, 0), (*BLUE, 255)), "WEBP", lossless=True)


def _upright_marker_image() -> Image.Image:
    """The upright picture of the EXIF cases: red top-left, green top-right, blue bottom."""
    w, h = SIZE
    im = Image.new("RGB", SIZE, BLUE)
    im.paste(RED, (0, 0, w // 2, h // 2))
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    return im


#: Where a viewer shows the markers of every EXIF case (the upright picture).
EXIF_POINTS: tuple[Point, ...] = (
    (0.25, 0.25, RED),
    (0.75, 0.25, GREEN),
    (0.25, 0.75, BLUE),
    (0.75, 0.75, BLUE),
)

# Orientation -> how to store the upright picture so that a viewer applying that
# orientation shows it upright again (the inverse of the viewer's transposition).
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the viewer turns it back with ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # the viewer turns it back with ROTATE_90
}


def exif_rotated(orientation: int, fmt: str = "JPEG") -> bytes:
    """The marker picture stored turned so EXIF Orientation ``orientation`` shows it upright."""
    # A viewer honouring the tag shows red top-left, green top-right, blue below (EXIF_POINTS);
    # orientations 5-8 are stored 48 x 64 and shown 64 x 48.
    im = _upright_marker_image()
    method = _STORE[orientation]
    stored = im if method is None else im.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    params: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {}
    return _encode(stored, fmt, exif=exif, **params)


def _odd_cases() -> dict[str, OddImage]:
    lossless_halves = [
        ("gray_png", gray_png(), "L", _gray(DARK), _gray(LIGHT)),
        ("gray_png_trns", gray_png_trns(), "L", WHITE, _gray(LIGHT)),
        ("bilevel_png", bilevel_png(), "1", BLACK, WHITE),
        ("gray16_png", gray16_png(), "I;16", _gray(DARK), _gray(LIGHT)),
        ("gray16_png_trns", gray16_png_trns(), "I;16", WHITE, _gray(LIGHT)),
        ("gray16_big_endian_tiff", gray16_big_endian_tiff(), "I;16B", _gray(DARK), _gray(LIGHT)),
        ("int32_tiff", int32_tiff(), "I", _gray(DARK), _gray(LIGHT)),
        ("int32_wide_range_tiff", int32_wide_range_tiff(), "I", BLACK, WHITE),
        ("float_tiff", float_tiff(), "F", _gray(DARK), _gray(LIGHT)),
        ("float_wide_range_tiff", float_wide_range_tiff(), "F", BLACK, WHITE),
        ("la_png", la_png(), "LA", WHITE, _gray(DARK)),
        ("palette_png", palette_png(), "P", RED, BLUE),
        ("palette_png_trns_index", palette_png_trns_index(), "P", WHITE, BLUE),
        ("palette_png_alpha_table", palette_png_alpha_table(), "P", WHITE, BLUE),
        ("rgb_png_trns", rgb_png_trns(), "RGB", WHITE, BLUE),
        ("gif_transparent", gif_transparent(), "P", WHITE, BLUE),
        ("webp_rgba", webp_rgba(), "RGBA", WHITE, BLUE),
    ]
    cases = {
        name: OddImage(data, mode, SIZE, _halves_expected(left, right), 0)
        for name, data, mode, left, right in lossless_halves
    }
    for name, data, mode, left, right in [
        ("rgb_jpeg", rgb_jpeg(), "RGB", RED, BLUE),
        ("cmyk_jpeg", cmyk_jpeg(), "CMYK", RED, BLUE),
        ("gray_jpeg", gray_jpeg(), "L", _gray(DARK), _gray(LIGHT)),
    ]:
        cases[name] = OddImage(data, mode, SIZE, _halves_expected(left, right), JPEG_TOLERANCE)
    # Half-transparent black over white is 255 * 127 / 255: 127 (Pillow may round to 128).
    rgba_points = ((0.25, 0.5, WHITE), (0.75, 0.25, RED), (0.75, 0.75, _gray(127)))
    cases["rgba_png"] = OddImage(rgba_png(), "RGBA", SIZE, rgba_points, 1)
    for orientation in range(1, 9):
        data = exif_rotated(orientation)
        cases[f"exif_orientation_{orientation}_jpeg"] = OddImage(
            data, "RGB", SIZE, EXIF_POINTS, JPEG_TOLERANCE
        )
    cases["exif_orientation_6_png"] = OddImage(exif_rotated(6, "PNG"), "RGB", SIZE, EXIF_POINTS, 0)
    return cases


#: name -> bytes ``probe_image`` refuses and a substring of the problem; the name is also a
#: sensible object key (its extension is what a lister would see).
BAD_IMAGE_CASES: dict[str, BadImage] = {
    "truncated.jpg": BadImage(truncated_jpeg(), "image file is truncated"),
    "truncated.png": BadImage(truncated_png(), "image file is truncated"),
    "empty.jpg": BadImage(zero_bytes(), "the object is empty (0 bytes)"),
    "caption.jpg": BadImage(text_named_like_image(), "Pillow cannot identify the format"),
    "readme.txt": BadImage(text_file(), "Pillow cannot identify the format"),
    "bomb-20000x20000.png": BadImage(
        decompression_bomb_png(20000, 20000), "declares 400,000,000 pixels"
    ),
    "bomb-10000x10000.png": BadImage(
        decompression_bomb_png(10000, 10000), "declares 10000x10000 = 100,000,000 pixels"
    ),
}

#: name -> bytes in an odd mode (or EXIF-rotated) and how the RGB result must look.
ODD_MODE_CASES: dict[str, OddImage] = _odd_cases()
