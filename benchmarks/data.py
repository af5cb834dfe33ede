"""Deterministic photo-like images and documents for the benchmarks.

Real photos compress to tens of KB at 500x375 because they are mostly smooth with some
edges and some texture; random noise (which compresses badly) or flat colour (which
compresses to nothing) would make decode timings meaningless. Each image here is a smooth
random colour field with a few soft-edged shapes and sensor-like grain (one of
:data:`TEXTURES` textures, built once per process), shifted by a per-image offset, with one
more shape of its own and a per-image JPEG quality: about 30-100 KB at 500x375, like the
photos users upload, and every image's bytes differ.

:func:`prepare` writes a data set of N images and N/2 documents once into a cache folder
(images are shared between sizes by hard links, so 1k, 10k and 50k cost 50k images), in
parallel processes.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

#: Size of the generated photos (width, height), as in the issue: about 500x375.
PHOTO_SIZE = (500, 375)
#: Distinct base textures (smooth field + shapes + grain) the images are cut from.
TEXTURES = 32
#: Image ids a document references at most (the seed's K).
MAX_IMAGES_PER_DOC = 3
#: One reference in this many names an image nobody uploaded (a dangling reference).
DANGLING_EVERY = 97

_WORDS = (
    "a photo of the harbour at dusk with boats and gulls over the water while a man walks "
    "his dog along the pier under a sky of low clouds lit orange by the setting sun and "
    "children play near a red kiosk selling ice cream to tourists in summer coats"
).split()


@functools.lru_cache(maxsize=TEXTURES)
def _texture(index: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(1_000_003 + index)
    width, height = size
    coarse = rng.integers(0, 256, size=(4 + index % 4, 5 + index % 3, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(3 + index % 5):  # a few objects with edges
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
    grain = 5.0 + 5.0 * (index % 8) / 7  # 5 .. 10: spreads the file sizes
    noise = rng.normal(0, grain, size=pixels.shape).astype(np.int16)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def photo_like_jpeg(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """JPEG bytes of one deterministic photo-like image.

    Args:
        seed: Selects the image; the same seed always gives the same bytes.
        size: ``(width, height)``.

    Returns:
        The encoded image (about 30-100 KB at 500x375).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = _texture(seed % TEXTURES, size)
    shifted = np.roll(pixels, (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))
    image = Image.fromarray(shifted)
    draw = ImageDraw.Draw(image)
    x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
    x1, y1 = x0 + int(rng.integers(20, width // 3)), y0 + int(rng.integers(20, height // 3))
    draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(86 + seed % 9))
    return buffer.getvalue()


def image_name(index: int) -> str:
    """File name of image ``index``: ``img000123.jpg``; its image_id is the stem."""
    return f"img{index:06d}.jpg"


def _write_range(folder: str, start: int, stop: int, size: tuple[int, int]) -> int:
    total = 0
    for i in range(start, stop):
        path = Path(folder) / image_name(i)
        if not path.exists():
            data = photo_like_jpeg(i, size)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # a killed run never leaves a half-written image behind
        total += path.stat().st_size
    return total


def write_photos(
    folder: Path, count: int, size: tuple[int, int] = PHOTO_SIZE, processes: int | None = None
) -> int:
    """Write photos ``0 .. count-1`` as ``folder/img000000.jpg`` ...; returns their bytes.

    Images already there are kept (the generator is deterministic), so a second call is
    cheap. Generation runs in ``processes`` processes (default: every core).
    """
    folder.mkdir(parents=True, exist_ok=True)
    processes = processes or os.cpu_count() or 1
    chunk = max(1, -(-count // (processes * 8)))
    bounds = [(s, min(count, s + chunk)) for s in range(0, count, chunk)]
    if count < 200 or processes == 1:
        return sum(_write_range(str(folder), s, e, size) for s, e in bounds)
    with ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(_write_range, str(folder), s, e, size) for s, e in bounds]
        return sum(f.result() for f in futures)


def documents(num_docs: int, num_images: int) -> list[dict[str, str]]:
    """``num_docs`` seed-style documents, each naming 1-3 of ``num_images`` images by id.

    Deterministic. About one reference in :data:`DANGLING_EVERY` names a missing image.
    """
    rng = np.random.default_rng(7)
    docs = []
    for d in range(num_docs):
        count = 1 + int(rng.integers(MAX_IMAGES_PER_DOC))
        words = rng.choice(len(_WORDS), size=12 + int(rng.integers(40)))
        doc = {"docid": f"doc{d:07d}", "text": " ".join(_WORDS[w] for w in words)}
        for k in range(1, count + 1):
            ref = int(rng.integers(num_images))
            if rng.integers(DANGLING_EVERY) == 0:
                doc[f"image_id{k}"] = f"missing{ref:06d}"
            else:
                doc[f"image_id{k}"] = Path(image_name(ref)).stem
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class DataSet:
    """A generated data set on local disk.

    Attributes:
        n: Images.
        images: Folder holding exactly the ``n`` images.
        texts: The documents' JSON file (a JSON array, like the seed's ``testdata.json``).
        image_bytes: Total bytes of the images.
        num_docs: Documents.
    """

    n: int
    images: Path
    texts: Path
    image_bytes: int
    num_docs: int

    @property
    def image_paths(self) -> list[Path]:
        """The image files, in id order."""
        return [self.images / image_name(i) for i in range(self.n)]


def prepare(cache: Path, n: int, num_docs: int | None = None) -> DataSet:
    """Make (or reuse) a data set of ``n`` images and ``num_docs`` documents (default n/2).

    All images live once in ``cache/pool``; ``cache/n<N>/images`` holds hard links to the
    first ``n``, so every size lists exactly its own images.
    """
    num_docs = n // 2 if num_docs is None else num_docs
    pool = cache / "pool"
    total = write_photos(pool, n)
    folder = cache / f"n{n}"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        link = images / image_name(i)
        if not link.exists():
            os.link(pool / image_name(i), link)
    texts = folder / f"documents-{num_docs}.json"
    if not texts.exists():
        tmp = texts.with_suffix(".tmp")
        tmp.write_text(json.dumps(documents(num_docs, n)))
        tmp.replace(texts)
    log.info("data set: %d images (%.0f MB), %d documents in %s", n, total / 1e6, num_docs, folder)
    return DataSet(n, images, texts, total, num_docs)
