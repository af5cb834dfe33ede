"""Curation: what measuring the quality signals at ingest costs.

``curation: ingest with signals vs without``: :func:`~vlm_lake.ingest.images.ingest_images`
of the data set's first photos (at most :data:`~benchmarks.ingest.MAX_IMAGES`) from its
local folder into a new ``images.lance``, with ``ImageIngestOptions(signals=True)`` (the
default: the checking decode keeps the shorter side >= 128 px and the signals are measured
on it) and with ``signals=False`` (the 1/8-scale decode only), alternating, best of
:data:`REPEATS` each. The local folder is the hardest case: no network
time hides the extra CPU. Target: at least 0.9.

``curation: perceptual duplicate clusters, 100k hashes``: :func:`~vlm_lake.curation.
clusters.cluster_images` (identical hashes merged, then multi-index hashing: bands of the
64 bits, only hashes sharing a band compared) against comparing all pairs (numpy, blocks
of :data:`BLOCK` rows against the rest) on the same :data:`HASHES` hashes: uniform random
64-bit values with a near-duplicate (1-8 bits flipped) planted after every 7th and an
exact copy of every 11th, threshold :data:`~vlm_lake.curation.clusters.PHASH_THRESHOLD`.
Both must find the same pairs (checked). Real perceptual hashes are less uniform than
these, so their bands are fuller.
"""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np

from benchmarks.common import Context, Row, row
from benchmarks.ingest import MAX_IMAGES, _alternate, _folder_of, _OursInto

log = logging.getLogger("benchmarks.curation")

#: Timed runs of each side (alternating); the best of each is reported.
REPEATS = 5
#: Hashes the cluster row clusters.
HASHES = 100_000
#: Rows per block of the all-pairs comparison.
BLOCK = 2_000


def _hashes(n: int) -> np.ndarray:
    """Uniform random uint64 hashes with planted near-duplicates and exact copies."""
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 7):
        bits = rng.choice(64, size=int(rng.integers(1, 9)), replace=False).astype(np.uint64)
        hashes[i + 1] = hashes[i] ^ np.bitwise_or.reduce(np.uint64(1) << bits)
    hashes[3::11] = hashes[: len(hashes[3::11]) * 11 : 11]
    return hashes


def _all_pairs(hashes: np.ndarray, threshold: int) -> int:
    """Pairs ``i < j`` within ``threshold`` bits, comparing every pair."""
    found = 0
    for start in range(0, len(hashes), BLOCK):
        block = hashes[start : start + BLOCK, None]
        rest = hashes[None, start:]
        close = np.bitwise_count(block ^ rest) <= threshold
        found += int(np.triu(close, k=1).sum())
    return found


def _cluster_rows() -> list[Row]:
    from vlm_lake.curation.clusters import PHASH_THRESHOLD, cluster_images, hamming_pairs

    hashes = _hashes(HASHES)
    sha = [str(i) for i in range(HASHES)]
    pixels = np.ones(HASHES, dtype=np.int64)
    started = time.perf_counter()
    clusters = cluster_images(hashes.view(np.int64), sha, pixels, threshold=PHASH_THRESHOLD)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    pairs = _all_pairs(hashes, PHASH_THRESHOLD)
    brute = time.perf_counter() - started
    unique, counts = np.unique(hashes, return_counts=True)
    a, b = hamming_pairs(unique, PHASH_THRESHOLD)
    banded = int((counts[a] * counts[b]).sum() + (counts * (counts - 1) // 2).sum())
    if banded != pairs:
        raise AssertionError(f"banded pairs {banded} != all pairs {pairs}")
    log.info("clusters: %d duplicates of %d hashes", len(clusters.duplicates()), HASHES)
    return [
        row(
            f"curation: perceptual duplicate clusters, {HASHES // 1000}k hashes, "
            f"threshold {PHASH_THRESHOLD} bits, vs all pairs",
            ours,
            brute,
            "s",
            higher=False,
        )
    ]


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
    ] + _cluster_rows()
