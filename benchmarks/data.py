"""Deterministic photo-like test images for the benchmarks.

Real photos compress to tens of KB at 500x375 because they are mostly smooth with some
edges and some texture; random noise (which compresses badly) or flat colour (which
compresses to nothing) would make decode timings meaningless. Each image here is a smooth
random colour field, a few soft-edged shapes and mild sensor-like noise, JPEG quality 90:
about 30-100 KB at 500x375, like the photos users upload.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Size of the generated photos (width, height), as in the issue: about 500x375.
PHOTO_SIZE = (500, 375)


def photo_like_jpeg(seed: int, size: tuple[int, int] = PHOTO_SIZE, quality: int = 90) -> bytes:
    """JPEG bytes of one deterministic photo-like image.

    Args:
        seed: Selects the image; the same seed always gives the same bytes.
        size: ``(width, height)``.
        quality: JPEG quality.

    Returns:
        The encoded image.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    # smooth colour field: a coarse random grid upsampled bicubically
    coarse = rng.integers(0, 256, size=(4 + seed % 4, 5 + seed % 3, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(3 + seed % 5):  # a few objects with edges
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        x1 = x0 + int(rng.integers(30, width // 2))
        y1 = y0 + int(rng.integers(30, height // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    pixels = np.asarray(image, dtype=np.int16)
    noise = rng.normal(0, 8, size=pixels.shape).astype(np.int16)  # sensor-like grain
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_photos(folder: Path, count: int, size: tuple[int, int] = PHOTO_SIZE) -> int:
    """Write ``count`` photos as ``folder/img000000.jpg`` ...; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        data = photo_like_jpeg(i, size)
        (folder / f"img{i:06d}.jpg").write_bytes(data)
        total += len(data)
    return total
