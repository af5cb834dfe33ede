"""``scale: training export after 1% of documents changed, full vs incremental``.

A ``multimodal.lance`` of :data:`DOCS` documents (one or two photo-like JPEGs each) in
fragments of :data:`ROWS_PER_FRAGMENT`, as the join writes them. The full export writes
and checks every shard; then 1% of the documents change the way an incremental join
changes them (their rows deleted from the fragment that held them, the new rows appended
as a fragment) and the incremental export writes and checks only the changed shards,
reusing the rest, and assembles the whole file again. Both runs use the local engine
(threads), so the ratio is about the work avoided, not about Spark. The single-stream
export's time is logged for reference. Ratio: full seconds / incremental seconds;
target >= 10.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from benchmarks.common import Context, Row, row
from benchmarks.data import photo_like_jpeg

log = logging.getLogger("benchmarks.scale")

DOCS = 2000
ROWS_PER_FRAGMENT = 100
CHANGED = DOCS // 100
PHOTOS = 64


def _table(start: int, count: int, photos: list[bytes], edition: int = 0) -> pa.Table:
    from vlm_lake.tables.contracts import multimodal_schema

    rows: list[dict[str, Any]] = []
    for i in range(start, start + count):
        row_: dict[str, Any] = {"docid": f"doc{i:06d}", "text": f"document {i} edition {edition}"}
        for k in (1, 2, 3):
            present = k == 1 or (k == 2 and i % 2 == 0)
            image = photos[(i * 3 + k + edition) % len(photos)] if present else None
            row_[f"image_id{k}"] = f"img{(i * 3 + k) % len(photos)}" if present else None
            row_[f"image{k}"] = image
        rows.append(row_)
    return pa.Table.from_pylist(rows, schema=multimodal_schema(3))


def _export_and_check(store: Any, mm: str, out: str) -> tuple[float, Any]:
    from vlm_lake.checks.training_shards import check_training_export
    from vlm_lake.training.sharded_export import export_sharded, publish_export

    started = time.perf_counter()
    run = export_sharded(store, mm, out, engine="local", version=None)
    outcomes = check_training_export(
        store, run.candidate, run.manifest, run.manifest.records, read=run.written_names
    )
    assert all(o.passed for o in outcomes), outcomes
    publish_export(store, out, run.manifest)
    return time.perf_counter() - started, run


def export_rows(ctx: Context) -> list[Row]:
    """Full vs incremental export of the same table, in one run."""
    import lance

    from vlm_lake.store.object_store import ObjectStore
    from vlm_lake.training.export_json import export_training_json

    photos = [photo_like_jpeg(seed) for seed in range(PHOTOS)]
    mm = str(ctx.work / "export" / "multimodal.lance")
    out = str(ctx.work / "export" / "training_data.json")
    for start in range(0, DOCS, ROWS_PER_FRAGMENT):
        table = _table(start, ROWS_PER_FRAGMENT, photos)
        lance.write_dataset(table, mm, mode="create" if start == 0 else "append")
    store = ObjectStore()
    started = time.perf_counter()
    export_training_json(store, mm, str(ctx.work / "export" / "single.json"), version=None)
    single = time.perf_counter() - started
    full, first = _export_and_check(store, mm, out)
    changed = 7 * ROWS_PER_FRAGMENT  # one source file's documents: a run of docids
    ids = ", ".join(f"'doc{i:06d}'" for i in range(changed, changed + CHANGED))
    lance.dataset(mm).delete(f"docid IN ({ids})")
    lance.write_dataset(_table(changed, CHANGED, photos, edition=1), mm, mode="append")
    incremental, again = _export_and_check(store, mm, out)
    log.info(
        "training export of %d documents (%.0f MB): single stream %.2f s, sharded full %.2f s "
        "(%d shards), after %d changed %.2f s (%d shards written, %d reused)",
        DOCS,
        first.manifest.bytes / 1e6,
        single,
        full,
        first.written,
        CHANGED,
        incremental,
        again.written,
        again.reused,
    )
    return [
        row(
            "scale: training export after 1% of documents changed, full vs incremental",
            incremental,
            full,
            f"seconds, export + checks of {DOCS} documents (ratio: full / incremental)",
            higher=False,
        )
    ]
