"""``scale: full materialization, seconds per 1k images, 10k vs 100k images``.

The quick start's own command (``python -m dagster_project.quickstart``: every asset, its
checks, one Spark session) over generated small photos (96x72 JPEGs, one document per two
images), timed from the command's start to its end, once with 10,000 and once with
100,000 images. Ratio: seconds per 1k images at 10k / at 100k; target >= 0.8 (the
per-image cost does not grow with the lake).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Context, Row, row
from benchmarks.data import documents, write_photos

log = logging.getLogger("benchmarks.scale")

SIZE = (96, 72)
SIZES = (10_000, 100_000)


def _data(cache: Path, n: int) -> tuple[Path, Path]:
    """``n`` small photos (hard links into one pool) and ``n // 2`` documents naming them."""
    pool = cache / "pool-96x72"
    write_photos(pool, n, SIZE)
    images = cache / f"small-n{n}" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for path in sorted(pool.iterdir())[:n]:
        link = images / path.name
        if not link.exists():
            os.link(path, link)
    texts = cache / f"small-n{n}" / "documents.json"
    if not texts.exists():
        texts.write_text(json.dumps(documents(n // 2, n)))
    return images, texts


def materialize_seconds(ctx: Context, n: int) -> float:
    """Wall seconds of the quick start over ``n`` images, in a fresh lake."""
    images, texts = _data(Path(ctx.cache), n)
    env = {
        **os.environ,
        "RAW_IMAGES_URI": str(images),
        "RAW_TEXTS_URI": str(texts),
        "LAKE_URI": str(ctx.work / f"pipeline-n{n}" / "lake"),
        "DAGSTER_HOME": str(ctx.work / f"pipeline-n{n}" / "home"),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dagster_project.quickstart"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the quick start over {n} images failed:\n{done.stdout[-3000:]}")
    log.info("full materialization of %d images: %.1f s\n%s", n, seconds, done.stdout[-1500:])
    return seconds


def pipeline_rows(ctx: Context, sizes: tuple[int, int] = SIZES) -> list[Row]:
    """Seconds per 1k images of a full materialization at two sizes, in one run."""
    small, large = sizes
    per_small = materialize_seconds(ctx, small) / (small / 1000)
    per_large = materialize_seconds(ctx, large) / (large / 1000)
    return [
        row(
            f"scale: full materialization, seconds per 1k images, {small // 1000}k vs "
            f"{large // 1000}k images",
            per_large,
            per_small,
            "seconds per 1k images (ratio: at the small size / at the large size)",
            higher=False,
        )
    ]
