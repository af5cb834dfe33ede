"""Ingest: S3 (moto on 127.0.0.1) into ``image_lance`` vs a plain parallel boto3 download.

The generated photos (N, at most :data:`MAX_IMAGES`: rates do not depend on the count, and
moto is slow) are uploaded once, in parallel, to an in-memory moto S3 server running in a
child process on 127.0.0.1 (see :mod:`benchmarks.s3`). Then, alternating, best of
:data:`REPEATS` runs each:

* **ours**: :func:`~vlm_lake.ingest.images.ingest_images` from ``s3://bench/images/`` into a
  new local ``images.lance`` (a full build): list the prefix, download with
  ``ImageIngestOptions.workers`` threads, probe every image (format, size, and a decode at
  1/8 scale that catches truncated files), hash it, write Lance fragments and commit.
* **baseline**, the plain script: list the prefix with boto3's paginator, then a
  ``ThreadPoolExecutor`` with the same number of threads, each calling
  ``get_object(...)["Body"].read()`` on one shared boto3 client (its connection pool as
  large as the thread count), keeping only the byte count. It writes nothing. The target
  is ours >= 80% of its images/s.
* **baseline, keys given**: the same download handed the key list for free (no listing):
  the pure download rate, for reference.

moto is a Python server, so it is the bottleneck of both sides, and on a small machine it
shares the cores with the client: every CPU-second the client spends (our probe decodes
about 1 ms of CPU per photo) is taken from the server. The ratio therefore says how much
our validation and Lance write cost on top of the download on *this* machine, not what a
real object store would deliver.

The same is also measured on the data set's local folder: ours ingesting the folder vs
listing it and reading every file with the same number of threads (from the page cache,
so that ratio is our per-image CPU cost, not I/O).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import MB, Context, Row, row, timed
from benchmarks.s3 import moto_server, settings, upload

log = logging.getLogger("benchmarks.ingest")

BUCKET = "bench"
PREFIX = "images"
#: Timed runs of each side (alternating); the best of each is reported.
REPEATS = 3
#: Most photos ingested (the first ones of the data set).
MAX_IMAGES = 4000


def plain_list(client: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix``, with boto3's ``list_objects_v2`` paginator."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def plain_download(client: Any, bucket: str, keys: Sequence[str], workers: int) -> int:
    """Download ``keys`` with ``workers`` threads; return the bytes read (nothing is kept).

    Args:
        client: A boto3 S3 client (thread-safe, shared by the threads).
        bucket: The bucket.
        keys: Object keys.
        workers: Threads.

    Returns:
        Total bytes downloaded.
    """

    def get(key: str) -> int:
        return len(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(get, keys))


def plain_read(folder: Path, workers: int) -> int:
    """List ``folder`` and read every file in it with ``workers`` threads; return the bytes."""
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda p: len(p.read_bytes()), paths))


def _alternate(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best seconds of each side, the sides run in turn (order rotated) ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(timed(sides[name])[1])
        log.info(
            "ingest run %d: %s",
            i + 1,
            ", ".join(f"{name} {t[-1]:.2f} s" for name, t in times.items()),
        )
    return {name: min(t) for name, t in times.items()}


class _OursInto:
    """``ingest_images`` into a fresh dataset folder each call (the previous one removed)."""

    def __init__(
        self, store: Any, source: str, scratch: Path, expected: int, options: Any = None
    ) -> None:
        self.store, self.source, self.scratch, self.expected = store, source, scratch, expected
        self.options = options
        self.runs = 0

    def __call__(self) -> None:
        from vlm_lake.ingest.images import ImageIngestOptions, ingest_images

        shutil.rmtree(self.scratch / f"images-{self.runs}.lance", ignore_errors=True)
        self.runs += 1
        self.scratch.mkdir(parents=True, exist_ok=True)
        report = ingest_images(
            self.store,
            self.source,
            str(self.scratch / f"images-{self.runs}.lance"),
            self.options or ImageIngestOptions(),
        )
        if report.inserted != self.expected:
            raise RuntimeError(
                f"ingest of {self.source!r} inserted {report.inserted} images; expected "
                f"{self.expected} (rejected: {len(report.rejected)})"
            )


def _rows(label: str, n: int, nbytes: int, ours_s: float, base_s: float) -> list[Row]:
    return [
        row(f"{label}: {n} images, images/s", n / ours_s, n / base_s, "images/s"),
        row(f"{label}: {n} images, MB/s", nbytes / MB / ours_s, nbytes / MB / base_s, "MB/s"),
    ]


def _folder_of(paths: Sequence[Path], folder: Path) -> Path:
    """A folder holding hard links to ``paths`` (the first images of a larger data set)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).hardlink_to(path)
    return folder


def run(ctx: Context) -> list[Row]:
    """Ingest from moto S3 and from a local folder, each against its plain download."""
    from vlm_lake.ingest.images import ImageIngestOptions
    from vlm_lake.store.object_store import ObjectStore

    data = ctx.data(ctx.n)
    n = min(ctx.n, MAX_IMAGES)
    paths = data.image_paths[:n]
    workers = ImageIngestOptions().workers
    scratch = ctx.work / "ingest"
    folder = data.images if n == data.n else _folder_of(paths, scratch / "images")
    rows: list[Row] = []
    with moto_server() as endpoint:
        store = ObjectStore(settings(endpoint))
        nbytes, upload_s = timed(lambda: upload(store, BUCKET, PREFIX, paths, workers))
        log.info("upload: %d objects, %.0f MB in %.1f s", n, nbytes / MB, upload_s)
        client = settings(endpoint, max_pool_connections=workers).boto3_client()
        keys = plain_list(client, BUCKET, PREFIX)
        if len(keys) != n:
            raise RuntimeError(f"listed {len(keys)} objects under {PREFIX!r}; uploaded {n}")
        ours = _OursInto(store, f"s3://{BUCKET}/{PREFIX}/", scratch / "s3", n)
        plain_download(client, BUCKET, keys[: workers * 4], workers)  # warm the pool
        best = _alternate(
            {
                "ours": ours,
                "baseline": lambda: plain_download(
                    client, BUCKET, plain_list(client, BUCKET, PREFIX), workers
                ),
                "baseline, keys given": lambda: plain_download(client, BUCKET, keys, workers),
            },
            REPEATS,
        )
    label = f"ingest from S3 (moto), {workers} threads"
    rows += _rows(label, n, nbytes, best["ours"], best["baseline"])
    rows += _rows(
        f"{label}, baseline given the keys", n, nbytes, best["ours"], best["baseline, keys given"]
    )
    local = _OursInto(ObjectStore(), str(folder), scratch / "local", n)
    best = _alternate({"ours": local, "baseline": lambda: plain_read(folder, workers)}, REPEATS)
    label = f"ingest from a local folder, {workers} threads"
    rows += _rows(label, n, nbytes, best["ours"], best["baseline"])
    shutil.rmtree(scratch, ignore_errors=True)
    return rows
