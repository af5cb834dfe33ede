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

``curation: near-duplicate texts, 50k documents``: :func:`~vlm_lake.curation.clusters.
cluster_texts` (datasketch's band parameters, banded with numpy over the signature matrix)
against datasketch's ``MinHashLSH`` used as its documentation shows (a ``LeanMinHash`` per
document inserted, then each one queried; the same parameters and confirmation), on
:data:`DOCUMENTS` random signatures with a copy of every 5th and a one-value change of
every 7th: seconds, and the peak of Python allocations (``tracemalloc``). Both must find the
same clusters (checked).

``curation: perceptual duplicate clusters, 1M uniform hashes``: the same clustering on
:data:`SCALE_HASHES` hashes at 3 and 6 bits, seconds only (comparing all pairs would take
hours): how the banded search grows (its bands are 16 and 9 bits wide).
"""

from __future__ import annotations

import logging
import shutil
import time
import tracemalloc
from typing import Any

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
#: Documents the text row clusters.
DOCUMENTS = 50_000


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


def _signatures(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    sig = rng.integers(0, 2**32, size=(n, 64), dtype=np.uint32)
    sig[1::5] = sig[0::5][: len(sig[1::5])]
    sig[2::7, 0] = sig[1::7, 0][: len(sig[2::7])]
    sig[2::7, 1:] = sig[1::7, 1:][: len(sig[2::7])]
    sig[2::7, 0] += np.uint32(1)
    return sig


def _datasketch_clusters(signatures: np.ndarray, threshold: float) -> int:
    """Duplicates found with datasketch's MinHashLSH objects (the earlier implementation)."""
    from datasketch import LeanMinHash, MinHashLSH

    from vlm_lake.curation.clusters import Clusters, _UnionFind

    lsh = MinHashLSH(threshold=threshold * 0.7, num_perm=64, weights=(0.2, 0.8))
    sketches = [LeanMinHash(seed=1, hashvalues=row) for row in signatures.astype(np.uint64)]
    for i, sketch in enumerate(sketches):
        lsh.insert(i, sketch, check_duplication=False)
    uf = _UnionFind(len(sketches))
    for i, sketch in enumerate(sketches):
        found = np.array([j for j in lsh.query(sketch) if j > i], dtype=np.int64)
        if len(found):
            share = (signatures[found] == signatures[i]).mean(axis=1)
            close = found[share >= threshold]
            uf.union_pairs(np.full(len(close), i), close)
    roots = uf.roots()
    return len(Clusters(roots, np.ones(len(roots), np.int64)).duplicates())


def _measure(work: Any) -> tuple[float, float, Any]:
    """Seconds (untraced), peak MB of Python allocations (a second, traced run), result."""
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    work()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak, result


def _text_rows() -> list[Row]:
    from vlm_lake.curation.clusters import TEXT_THRESHOLD, cluster_texts

    signatures = _signatures(DOCUMENTS)
    ours_s, ours_mb, clusters = _measure(lambda: cluster_texts(signatures))
    theirs_s, theirs_mb, theirs = _measure(lambda: _datasketch_clusters(signatures, TEXT_THRESHOLD))
    if len(clusters.duplicates()) != theirs:
        raise AssertionError(f"duplicates {len(clusters.duplicates())} != datasketch's {theirs}")
    name = f"curation: near-duplicate texts, {DOCUMENTS // 1000}k documents, vs MinHashLSH objects"
    return [
        row(f"{name} (time)", ours_s, theirs_s, "s", higher=False),
        row(f"{name} (peak Python memory)", ours_mb, theirs_mb, "MB", higher=False),
    ]


#: Hashes of the scale rows (no all-pairs baseline: it would take hours).
SCALE_HASHES = 1_000_000


def _scale_rows() -> list[Row]:
    """Seconds of :func:`cluster_images` on 1M uniform hashes, at 3 and 6 bits."""
    from vlm_lake.curation.clusters import cluster_images

    hashes = _hashes(SCALE_HASHES).view(np.int64)
    sha = np.arange(SCALE_HASHES)
    pixels = np.ones(SCALE_HASHES, dtype=np.int64)
    rows = []
    for bits in (3, 6):
        started = time.perf_counter()
        cluster_images(hashes, sha, pixels, threshold=bits)
        seconds = time.perf_counter() - started
        name = f"curation: perceptual duplicate clusters, 1M uniform hashes, threshold {bits} bits"
        rows.append(row(name, seconds, None, "s", higher=False))
    return rows


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
    return (
        [
            row(
                f"curation: ingest with signals vs without (local folder, {n} images, "
                f"{workers} threads)",
                n / best["with"],
                n / best["without"],
                "images/s",
            )
        ]
        + _cluster_rows()
        + _text_rows()
        + _scale_rows()
    )
