"""``loader: VLMDataset from S3 (moto) vs from local disk``: the same table, the same loader.

The loader table (:mod:`benchmarks.loader_data`, the lake's fragment size) is copied file
by file to moto's S3 server (a child process on 127.0.0.1, see :mod:`benchmarks.s3`) and
read by the same ``VLMDataset(output="uint8")`` + ``DataLoader(**loader_kwargs())`` as from
local disk, three ways:

* with a fragment cache (``cache_dir``), first epoch from a cold cache: the whole epoch
  timed, every download included, against the local disk's whole first epoch (the
  workers of both started beforehand by an empty epoch);
* the same cache warm (second epoch), steady rate against local;
* without a cache: every batch is a Lance ``take`` over HTTP (steady rate).

And the DataLoader workers' peak resident memory (``VmHWM``) for each, against local:
reading from S3 must not grow memory with the table. moto serves every object from
Python and its cost per ranged GET grows with the object's size (it copies the object per
request), far slower than a real store for the uncached ``take``: the no-cache row is a
lower bound.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from benchmarks.common import Context, Row, row
from benchmarks.loader_data import LoaderTable
from benchmarks.s3 import moto_server, settings

log = logging.getLogger("benchmarks.loader")

BUCKET = "bench-loader"
MB = 1 << 20


class _Gate(Sampler[list[int]]):
    """Batches of the table in row order, or none while closed (to start the workers)."""

    def __init__(self, docs: int, batch: int) -> None:
        self.batches = [list(range(s, min(docs, s + batch))) for s in range(0, docs, batch)]
        self.open = False

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches if self.open else [])

    def __len__(self) -> int:
        return len(self.batches) if self.open else 0


def _copy_to_s3(store: Any, root: Path) -> str:
    """Upload the dataset folder ``root`` under ``s3://BUCKET/<root name>``; its URI."""
    client = store.client
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{root.name}/{path.relative_to(root).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    return f"s3://{BUCKET}/{root.name}"


def _peak_mb(loader: DataLoader[Any]) -> float:
    """Largest peak resident memory (VmHWM) of the loader's worker processes, MB."""
    peaks = []
    for worker in loader._iterator._workers:  # type: ignore[union-attr]
        with open(f"/proc/{worker.pid}/status", encoding="ascii") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
        peaks.append(kb / 1024)
    return max(peaks)


def _epochs(dataset: Any, table: LoaderTable, workers: int) -> tuple[float, float, float]:
    """First epoch (whole, workers already up), a steady later epoch, peak worker MB."""
    from benchmarks.loader import BATCH, _loader_pass
    from vlm_lake.training.dataset import VLMDataset

    gate = _Gate(table.docs, BATCH)
    loader = DataLoader(
        dataset, batch_sampler=gate, num_workers=workers, **VLMDataset.loader_kwargs()
    )
    for _ in loader:  # starts the workers, reads nothing
        pass
    gate.open = True
    started, count = time.perf_counter(), 0
    for i, _ in enumerate(loader):
        count += table.present[i]
    first = count / (time.perf_counter() - started)
    steady = _loader_pass(loader, table.present, 2 * workers)[0]
    return first, steady, _peak_mb(loader)


def s3_rows(ctx: Context, table: LoaderTable, workers: int) -> list[Row]:
    """The loader over the same table on moto's S3 (cached, uncached) and on local disk."""
    from vlm_lake.store.object_store import ObjectStore
    from vlm_lake.training.dataset import VLMDataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs: dict[str, tuple[float, float, float]] = {}
    try:
        with moto_server() as endpoint:
            store = ObjectStore(settings(endpoint))
            uri = _copy_to_s3(store, Path(table.uri))
            options = store.storage_options(uri)
            cache = ctx.work / "fragment-cache"
            shutil.rmtree(cache, ignore_errors=True)  # cold
            for name, dataset in {
                "local": VLMDataset(table.uri, version=None, output="uint8"),
                "s3 cached": VLMDataset(
                    uri, options, version=None, output="uint8", cache_dir=str(cache)
                ),
                "s3": VLMDataset(uri, options, version=None, output="uint8"),
            }.items():
                runs[name] = _epochs(dataset, table, workers)
                log.info("loader from %s: first epoch, steady, peak MB %s", name, runs[name])
    finally:
        torch.set_num_threads(threads)
    where = (
        f"images/s, uint8, {workers} workers, {table.docs} documents, "
        f"{table.fragments} fragment(s), {table.bytes / MB:.0f} MB"
    )
    vs = "loader: VLMDataset from S3 (moto) vs from local disk"
    rates = [
        (
            f"{vs}, fragment cache, first epoch from a cold cache (downloads included)",
            "s3 cached",
            0,
        ),
        (f"{vs}, fragment cache warm", "s3 cached", 1),
        (f"{vs}, no cache (Lance take over HTTP)", "s3", 1),
    ]
    peaks = [
        ("loader worker peak memory: from S3 (moto) without cache vs local disk", "s3"),
        (
            "loader worker peak memory: from S3 (moto) with the fragment cache vs local disk",
            "s3 cached",
        ),
    ]
    peak_unit = "MB (VmHWM, largest worker)"
    return [row(name, runs[k][i], runs["local"][i], where) for name, k, i in rates] + [
        row(name, runs[k][2], runs["local"][2], peak_unit, higher=False) for name, k in peaks
    ]
