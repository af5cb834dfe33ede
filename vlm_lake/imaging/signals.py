"""Quality signals of images, from the reduced decode the ingest already does.

The ingest decodes every image once to catch corrupt files (JPEGs at a reduced DCT
scale, which still reads every byte). With signals on, a JPEG is decoded to luminance
only (libjpeg skips the colour planes) at the smallest DCT scale that keeps the shorter
side at least :data:`THUMB` pixels, as cheap as the RGB decode at 1/8 it replaces; the
upright luminance (EXIF orientation applied) is then resized to a :data:`THUMB` x
:data:`THUMB` thumbnail (:func:`thumbnail`, in the download threads, Pillow only). The
signals of a whole batch of thumbnails are computed at once with numpy
(:func:`batch_signals`): per-image Python from 16 download threads held the GIL long
enough to halve the ingest rate (docs/benchmarks.md#curation).

* ``phash``: 64-bit perceptual hash, imagehash's ``phash`` algorithm (DCT-II of the
  32x32 luminance, the 8x8 lowest frequencies against their median) on the thumbnail
  box-reduced to 32x32, bit for bit what ``imagehash.phash`` gives for that 32x32 image
  (tested); stored as a signed int64 with the same bits; near-duplicates differ in few bits;
* ``blur``: variance of the 4-neighbour Laplacian of the thumbnail; low is blurred or flat
  (blur finer than a 64th of the image is not seen);
* ``luma_mean`` (0..1), ``dark_share`` and ``bright_share``: the share of pixels with
  luminance below :data:`DARK` or above :data:`BRIGHT` (exposure);
* ``flat_share``: the share of pixels within :data:`FLAT_TOLERANCE` levels of the median
  luminance (1.0: a blank, single-colour image);
* ``aspect_ratio`` (width / height as displayed) and ``short_side`` (pixels), from the
  image's own size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

#: Side of the square luminance thumbnail the signals are measured on.
THUMB = 64
#: Side of the image the perceptual hash takes the DCT of (imagehash's default 8 x 4),
#: a 2 x 2 box reduction of the thumbnail.
HASH_INPUT = THUMB // 2
#: Luminance levels (0..255) under / over which a pixel counts as dark / bright.
DARK, BRIGHT = 16, 239
#: Levels from the median luminance within which a pixel counts as flat.
FLAT_TOLERANCE = 4


def draft_request(width: int, height: int) -> tuple[int, int]:
    """The size to ask Pillow's JPEG ``draft`` for: shorter side >= :data:`THUMB`."""
    scale = min(1.0, THUMB / max(1, min(width, height)))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def thumbnail(gray: Image.Image) -> bytes:
    """The ``THUMB`` x ``THUMB`` luminance thumbnail of an upright ``L`` image (bilinear)."""
    if gray.size != (THUMB, THUMB):
        gray = gray.resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    return gray.tobytes()


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes (signed or not)."""
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _dct_rows(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of scipy's unnormalised DCT-II matrix of size ``n``."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT8 = _dct_rows(HASH_INPUT, 8)


def hash_inputs(thumbs: np.ndarray) -> np.ndarray:
    """``[B, 64, 64]`` thumbnails box-reduced to the ``[B, 32, 32]`` uint8 hash input."""
    x = thumbs.astype(np.uint16)
    total = x[:, ::2, ::2] + x[:, 1::2, ::2] + x[:, ::2, 1::2] + x[:, 1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def phashes(small: np.ndarray) -> np.ndarray:
    """The ``imagehash.phash`` of each ``[32, 32]`` uint8 image, as int64 with the same bits."""
    low = _DCT8 @ small.astype(np.float64) @ _DCT8.T
    # Rounding noise (1e-12) must not decide a tie: a flat image's AC terms are 0 exactly.
    flat = np.round(low.reshape(len(small), 64), 6)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64).view(np.int64)


def batch_signals(thumbs: list[bytes], sizes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """The signal columns of a batch of images.

    Args:
        thumbs: Each image's :func:`thumbnail`.
        sizes: Each image's displayed ``(width, height)``.

    Returns:
        Column name -> values, one per image, in order.
    """
    x = np.frombuffer(b"".join(thumbs), dtype=np.uint8).reshape(len(thumbs), THUMB, THUMB)
    n = THUMB * THUMB
    offsets = (np.arange(len(x)) * 256)[:, None]
    counts = np.bincount((x.reshape(len(x), n) + offsets).ravel(), minlength=256 * len(x))
    counts = counts.reshape(len(x), 256)
    median = (np.cumsum(counts, axis=1) < (n + 1) // 2).sum(axis=1)
    levels = np.arange(256)
    near = np.abs(levels[None, :] - median[:, None]) <= FLAT_TOLERANCE
    f = x.astype(np.float32)
    lap = f[:, :-2, 1:-1] + f[:, 2:, 1:-1] + f[:, 1:-1, :-2] + f[:, 1:-1, 2:] - 4 * f[:, 1:-1, 1:-1]
    width = np.array([w for w, _ in sizes], dtype=np.float64)
    height = np.array([h for _, h in sizes], dtype=np.float64)
    return {
        "phash": phashes(hash_inputs(x)),
        "blur": lap.reshape(len(x), -1).var(axis=1),
        "luma_mean": counts @ levels / (n * 255.0),
        "dark_share": counts[:, :DARK].sum(axis=1) / n,
        "bright_share": counts[:, BRIGHT + 1 :].sum(axis=1) / n,
        "flat_share": (counts * near).sum(axis=1) / n,
        "aspect_ratio": width / height,
        "short_side": np.minimum(width, height).astype(np.int32),
    }
