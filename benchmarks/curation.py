"""Curation: what measuring the quality signals at ingest costs.

``curation: ingest with signals vs without``: :func:`~vlm_lake.ingest.images.ingest_images`
of the data set's first photos (at most :data:`~benchmarks.ingest.MAX_IMAGES`) from its
local folder into a new ``images.lance``, with ``ImageIngestOptions(signals=True)`` (the
default: the checking decode keeps the shorter side >= 128 px and the signals are measured
on it) and with ``signals=False`` (the 1/8-scale decode only), alternating, best of
:data:`REPEATS` each. The local folder is the hardest case: no network
time hides the extra CPU. Target: at least 0.9.
"""

from __future__ import annotations

import shutil

from benchmarks.common import Context, Row, row
from benchmarks.ingest import MAX_IMAGES, _alternate, _folder_of, _OursInto

#: Timed runs of each side (alternating); the best of each is reported.
REPEATS = 5


def run(ctx: Context) -> list[Row]:
    """Images/s of the local ingest with and without the quality signals."""
    from vlm_lake.ingest.images import ImageIngestOptions
    from vlm_lake.store.object_store import ObjectStore

    data = ctx.data(ctx.n)
    n = min(ctx.n, MAX_IMAGES)
    scratch = ctx.work / "curation"
    folder = data.images if n == data.n else _folder_of(data.image_paths[:n], scratch / "images")
    sides = {
        "with": _OursInto(ObjectStore(), str(folder), scratch / "with", n, ImageIngestOptions()),
        "without": _OursInto(
            ObjectStore(), str(folder), scratch / "without", n, ImageIngestOptions(signals=False)
        ),
    }
    best = _alternate(sides, REPEATS)
    shutil.rmtree(scratch, ignore_errors=True)
    workers = ImageIngestOptions().workers
    return [
        row(
            f"curation: ingest with signals vs without (local folder, {n} images, "
            f"{workers} threads)",
            n / best["with"],
            n / best["without"],
            "images/s",
        )
    ]
