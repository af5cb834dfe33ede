"""``loader: VLMDataset from S3 (moto) vs from local disk``: the same lake, the same loader.

The benchmark lake's ``multimodal.lance`` is copied file by file to moto's S3 server (a
child process on 127.0.0.1, see :mod:`benchmarks.s3`) and read by the same
``VLMDataset`` + ``DataLoader(**VLMDataset.loader_kwargs())`` as from local disk, uint8
output, after the same warm-up. Ratio: images/s from S3 / from local disk (target: at
least 0.7). moto serves every object from Python threads, far slower than a real store,
so the ratio is a lower bound.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import Context, Row, row
from benchmarks.s3 import moto_server, settings

log = logging.getLogger("benchmarks.loader")

BUCKET = "bench-loader"


def _copy_to_s3(store: object, root: Path) -> str:
    """Upload the dataset folder ``root`` under ``s3://BUCKET/<root name>``; its URI."""
    client = store.client  # type: ignore[attr-defined]
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{root.name}/{path.relative_to(root).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    return f"s3://{BUCKET}/{root.name}"


def s3_rows(ctx: Context) -> list[Row]:
    """images/s of the loader over the same lake on moto's S3 and on local disk."""
    from benchmarks.loader import BATCH, MAX_DOCS, _loader_pass, _workers
    from vlm_lake.store.object_store import ObjectStore
    from vlm_lake.tables import lance_io
    from vlm_lake.tables.contracts import image_id_columns
    from vlm_lake.training.dataset import VLMDataset

    layout = ctx.lake()
    ds = lance_io.open_dataset(layout.multimodal, {}, None)
    docs = min(ctx.n // 2, MAX_DOCS, ds.count_rows())
    ids = ds.take(list(range(docs)), columns=image_id_columns(ds.schema))
    per_doc = [sum(c[i].is_valid for c in ids.columns) for i in range(docs)]
    present = [sum(per_doc[s : s + BATCH]) for s in range(0, docs, BATCH)]
    workers = _workers()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates: dict[str, float] = {}
    try:
        with moto_server() as endpoint:
            store = ObjectStore(settings(endpoint))
            uri = _copy_to_s3(store, Path(layout.multimodal))
            for name, (where, options) in {
                "local": (layout.multimodal, {}),
                "s3": (uri, store.storage_options(uri)),
            }.items():
                dataset = VLMDataset(where, options, version=None, output="uint8")
                loader = DataLoader(
                    Subset(dataset, range(docs)),
                    batch_size=BATCH,
                    num_workers=workers,
                    **VLMDataset.loader_kwargs(),
                )
                rates[name] = _loader_pass(loader, present, 2 * workers)[0]
                log.info("loader from %s: %.1f images/s", name, rates[name])
    finally:
        torch.set_num_threads(threads)
    return [
        row(
            "loader: VLMDataset from S3 (moto) vs from local disk",
            rates["s3"],
            rates["local"],
            f"images/s, uint8, {workers} workers, {docs} documents",
        )
    ]
