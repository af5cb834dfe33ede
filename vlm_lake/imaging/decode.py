"""Image probing and decoding with Pillow: the one place that knows about pixels.

Both entry points see an image the way a viewer shows it: EXIF orientation applied,
transparency composited on white, high-bit-depth grayscale scaled (not clipped) to 8 bits.
Both refuse a decompression bomb from its header, before any pixel memory is allocated.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.signals import draft_request, thumbnail

#: Object-key extensions taken as images (compared lower-cased).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
)

#: Refuse images with more pixels than this (decompression bombs): 89,478,485, Pillow's own
#: default ``Image.MAX_IMAGE_PIXELS`` (about 9459 x 9459, 256 MiB once decoded to RGB).
#: Pillow warns above that number and refuses above twice it whatever we say, so a larger
#: limit here could never take effect.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

#: Pillow modes that :func:`decode_rgb` turns into RGB (every mode a file can open as).
DECODABLE_MODES: frozenset[str] = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
    | {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_WIDE_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}
_WHITE = (255, 255, 255)

# EXIF Orientation -> the transposition a viewer applies to show the image upright.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

# Errors Pillow's plugins raise on truncated or corrupt data while decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


@dataclass(frozen=True)
class ImageInfo:
    """What probing an image found.

    Attributes:
        format: Pillow's format name, lower-cased (``jpeg``, ``png``...).
        width: Width in pixels as displayed (after EXIF orientation).
        height: Height in pixels as displayed (after EXIF orientation).
        thumbnail: The upright luminance thumbnail the quality signals are computed from
            (:mod:`vlm_lake.imaging.signals`), when asked for.
    """

    format: str
    width: int
    height: int
    thumbnail: bytes | None = None


class _PixelLimitError(Image.DecompressionBombError):
    """The header declares more than :data:`MAX_PIXELS` pixels."""


def _pixel_limit_problem(declared: str) -> str:
    return (
        f"decompression bomb refused before decoding: the header declares {declared}, "
        f"more than the limit of {MAX_PIXELS:,} pixels (MAX_PIXELS); "
        "downscale the image below the limit"
    )


def _open(data: bytes) -> ImageFile.ImageFile:
    """Open ``data`` lazily (header only) and refuse it if it has too many pixels.

    Raises:
        _PixelLimitError: The header declares more than :data:`MAX_PIXELS` pixels.
        UnidentifiedImageError: Pillow does not recognise the bytes.
    """
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: no size kept
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(found.group(1)):,} pixels" if found else f"too many pixels ({exc})"
        raise _PixelLimitError(_pixel_limit_problem(declared)) from exc
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise _PixelLimitError(
            _pixel_limit_problem(f"{width}x{height} = {width * height:,} pixels")
        )
    return im


def _orientation(im: Image.Image) -> int:
    """The EXIF (or XMP) Orientation of a loaded image; 1 when absent or not 1..8."""
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a wide grayscale array to uint8 by scaling its nominal range, never by clipping.

    16-bit modes map 0..65535 to 0..255. ``I`` (32-bit) holding 16-bit values (what Pillow and
    PNG use it for) is treated the same. ``F`` holding values in 0..1 maps them to 0..255.
    Anything else has no agreed display range, so its own min..max is stretched to 0..255
    (a constant image of that kind comes out black). NaN counts as the minimum, +-inf as
    the finite maximum / minimum.
    """
    if mode in _SIXTEEN_BIT_MODES:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    wide = values.astype(np.float64)
    finite = np.isfinite(wide)
    if not finite.all():  # a float image with NaN / inf: NaN as darkest, inf as an extreme
        lo, hi = (wide[finite].min(), wide[finite].max()) if finite.any() else (0.0, 0.0)
        wide = np.nan_to_num(wide, nan=lo, posinf=hi, neginf=lo)
    lo, hi = float(wide.min()), float(wide.max())
    if mode == "I" and lo >= 0 and hi <= 65535:
        scale, offset = 255 / 65535, 0.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
    else:
        scale, offset = (255 / (hi - lo) if hi > lo else 0.0), lo
    return np.rint((wide - offset) * scale).clip(0, 255).astype(np.uint8)


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """``I;16*`` / ``I`` / ``F`` -> ``L``, or ``LA`` where a tRNS gray value marks transparency."""
    values = np.asarray(im)
    gray = Image.fromarray(_scale_to_8bit(values, im.mode))
    transparent = im.info.get("transparency")
    if isinstance(transparent, int) and im.mode != "F":
        alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
        return Image.merge("LA", (gray, Image.fromarray(alpha)))
    return gray


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded image to RGB; returns ``im`` itself when it already is plain RGB."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im  # the common case (JPEG photos): no copy
    if im.mode in _WIDE_MODES:
        im = _wide_to_8bit(im)
    if im.mode[-1] in "Aa" or "transparency" in im.info:
        rgba = im.convert("RGBA")  # applies a palette / gray / RGB tRNS entry as alpha
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")  # L, 1, P, CMYK (Adobe-inverted handled on read), YCbCr, LAB...


def probe_image(data: bytes, source_uri: str, *, signals: bool = False) -> ImageInfo:
    """Check that ``data`` decodes as an image and return its format and displayed size.

    The pixel count is checked from the header, before anything is decoded, so a
    decompression bomb costs no memory. Then the image is fully decoded (JPEGs at reduced
    DCT scale via ``draft``, which still reads every byte), so truncated files are caught
    here and not at training time. Width and height are as displayed: swapped for EXIF
    orientations 5-8 (rotated by 90 degrees), as :func:`decode_rgb` returns the image.

    Args:
        data: Raw object bytes.
        source_uri: Where the bytes came from, used in the error message.
        signals: Also make the thumbnail of the quality signals, from the same decode (a
            JPEG is then decoded to luminance only, its shorter side at least ``THUMB``
            pixels instead of 1/8 scale).

    Returns:
        The image's format, displayed width and displayed height.

    Raises:
        InvalidImageError: If the bytes are empty, not an image, truncated or corrupt, in a
            pixel mode that cannot become RGB, or more than :data:`MAX_PIXELS` pixels.
    """
    if not data:
        raise InvalidImageError(source_uri, "the object is empty (0 bytes)")
    try:
        with _open(data) as im:
            fmt, (width, height) = (im.format or "unknown").lower(), im.size
            if im.mode not in DECODABLE_MODES:
                raise InvalidImageError(
                    source_uri,
                    f"pixel mode {im.mode!r} cannot be converted to RGB "
                    f"(supported: {', '.join(sorted(DECODABLE_MODES))})",
                )
            if fmt == "jpeg" and signals:  # luminance only, shorter side >= THUMB
                im.draft("L", draft_request(width, height))
            elif fmt == "jpeg":
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
            orientation = _orientation(im)
            if orientation in _SWAPS_AXES:
                width, height = height, width
            thumb = None
            if signals:
                gray = im if im.mode == "L" else _to_rgb(im).convert("L")
                if orientation != 1:
                    gray = gray.transpose(_TRANSPOSE[orientation])
                thumb = thumbnail(gray)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:  # ours from the header, or Pillow's (GIF frames)
        problem = str(exc) if isinstance(exc, _PixelLimitError) else f"decompression bomb: {exc}"
        raise InvalidImageError(source_uri, problem) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            source_uri,
            f"Pillow cannot identify the format ({len(data)} bytes starting {data[:16]!r})",
        ) from None
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(
            source_uri, f"decoding failed (truncated or corrupt data): {exc}"
        ) from exc
    return ImageInfo(fmt, width, height, thumb)


def decode_rgb(
    data: bytes, size: tuple[int, int] | None = None, *, draft_min: int | None = None
) -> Image.Image:
    """Decode image bytes to an RGB Pillow image as a viewer shows it.

    EXIF orientation is applied (the result is upright). Palette, grayscale, CMYK, LAB and
    YCbCr images are converted to RGB; alpha and tRNS transparency are composited on white;
    16-bit and float grayscale is scaled to 8 bits (see ``_scale_to_8bit``), not clipped.
    A plain RGB image is not copied before the resize.

    Args:
        data: Encoded image bytes (JPEG, PNG, TIFF, WebP...).
        size: Output ``(width, height)``, resized bilinearly after orientation; None keeps
            the displayed size. (For speed a rotated image is resized before it is turned,
            which can differ from turning first by one level in a few pixels.)
        draft_min: If set, a JPEG whose sides are both at least twice this many pixels is
            decoded at a reduced DCT scale (1/2, 1/4 or 1/8; Pillow's ``draft``) that keeps
            both sides >= ``draft_min``: a 4000x3000 photo needed at 256 decodes at 1/8,
            several times faster, and the later resize sees nearly the same pixels.

    Returns:
        An RGB image of ``size``, or of the displayed size when ``size`` is None.

    Raises:
        PIL.UnidentifiedImageError: The bytes are not an image Pillow knows (an ``OSError``).
        OSError: The data is truncated or corrupt.
        PIL.Image.DecompressionBombError: The header declares more than :data:`MAX_PIXELS`
            pixels; raised before any pixels are decoded.
    """
    if draft_min is not None and draft_min < 1:
        raise ValueError(f"draft_min={draft_min!r} must be a positive number of pixels or None")
    with _open(data) as im:
        if draft_min is not None and im.format == "JPEG" and min(im.size) >= 2 * draft_min:
            im.draft("RGB", (draft_min, draft_min))
        im.load()
        orientation = _orientation(im)
        rgb = _to_rgb(im)
    if size is not None:
        target = (size[1], size[0]) if orientation in _SWAPS_AXES else size
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    if orientation != 1:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return rgb
