"""Image probing and decoding with Pillow: the one place that knows about pixels."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from vlm_lake.errors import InvalidImageError

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

#: Refuse images with more pixels than this (decompression bombs); about 16k x 16k.
MAX_PIXELS = 16384 * 16384


@dataclass(frozen=True)
class ImageInfo:
    """What probing an image found.

    Attributes:
        format: Pillow's format name, lower-cased (``jpeg``, ``png``...).
        width: Width in pixels.
        height: Height in pixels.
    """

    format: str
    width: int
    height: int


def probe_image(data: bytes, source_uri: str) -> ImageInfo:
    """Check that ``data`` decodes as an image and return its format and size.

    The image is fully decoded (JPEGs at reduced DCT scale via ``draft``, which still reads
    every byte), so truncated files are caught here and not at training time.

    Args:
        data: Raw object bytes.
        source_uri: Where the bytes came from, used in the error message.

    Returns:
        The image's format, width and height.

    Raises:
        InvalidImageError: If the bytes are empty, not an image, truncated, or too large.
    """
    if not data:
        raise InvalidImageError(source_uri, "the object is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = (im.format or "unknown").lower(), im.size
                if width * height > MAX_PIXELS:
                    raise InvalidImageError(
                        source_uri, f"{width}x{height} pixels exceeds the limit of {MAX_PIXELS}"
                    )
                if fmt == "jpeg":
                    im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                im.load()
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(source_uri, "Pillow cannot identify the format") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise InvalidImageError(source_uri, f"decoding failed: {exc}") from exc
    return ImageInfo(fmt, width, height)


def decode_rgb(data: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes to an RGB Pillow image, optionally resized to ``size`` (w, h).

    Palette, grayscale, CMYK and alpha images are converted to RGB (alpha composited on
    white, as a viewer would show it).
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
        else:
            out = im.convert("RGB")
    if size is not None and out.size != size:
        out = out.resize(size, Image.BILINEAR)
    return out
