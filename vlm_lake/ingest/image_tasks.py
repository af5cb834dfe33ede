"""Image ingest on Spark: tasks download, check and write fragments; the driver commits once.

The plan (what to download) is made on the driver as for the local path
(:mod:`~vlm_lake.ingest.image_plan`). Its objects become a small DataFrame of
``(position, uri, key, size, etag)`` rows in ``tasks`` partitions; each task downloads its
objects with a bounded thread pool, checks and hashes them, and writes the good ones as
uncommitted fragments of ``images.lance`` (:mod:`vlm_lake.spark.fragment_job`). Only the
fragments' metadata, the ids written and the rejections come back. The driver checks the
row count and commits in one Lance transaction: an overwrite for a rebuild, else an
``Update`` that drops the replaced and deleted rows and adds the new fragments, the same
result as the local path's ``merge_insert``. A failed task fails the job and commits
nothing; readers keep the published version.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake.ingest.changes import Committed
from vlm_lake.ingest.image_fetch import iter_image_batches
from vlm_lake.ingest.quarantine import RejectedImage
from vlm_lake.spark.fragment_job import FragmentSink, FragmentTask, run_fragment_job
from vlm_lake.store.object_store import ObjectInfo, ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import fragments, lance_io
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.tables.layout import TableLayout, maintain
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)

#: The plan's rows as they travel to the tasks.
PLAN_SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64()),
        pa.field("uri", pa.string()),
        pa.field("key", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("etag", pa.string()),
    ]
)


@dataclass
class FetchImagesTask(FragmentTask):
    """Runs in Spark's Python workers: plan rows -> image rows in fragments.

    Statistics per task: ``order`` (its first plan position), ``written`` (ids), ``rejected``
    (rejections as dicts), ``objects`` and ``bytes`` downloaded.
    """

    settings: StoreSettings | None = field(repr=False)
    options: Any
    sink: FragmentSink

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """Download and check this partition's objects; yield the good ones' rows."""
        infos: list[ObjectInfo] = []
        for batch in batches:
            for row in batch.to_pylist():
                stats.setdefault("order", int(row["position"]))
                infos.append(ObjectInfo(row["uri"], row["key"], int(row["size"]), row["etag"]))
        if not infos:
            return
        store = ObjectStore(self.settings)
        progress = Progress(log, "images (task)")
        rejected: list[RejectedImage] = []
        written: list[str] = []
        yield from iter_image_batches(store, infos, self.options, progress, rejected, written)
        progress.done()
        stats.update(
            written=written,
            rejected=[dataclasses.asdict(r) for r in rejected],
            objects=progress.count,
            bytes=progress.nbytes,
        )


def _plan_frame(spark: Any, to_fetch: list[ObjectInfo] | Any) -> Any:
    """The downloads as a DataFrame of :data:`PLAN_SCHEMA` (positions in key order)."""
    if isinstance(to_fetch, list):
        rows = [
            {"position": i, "uri": o.uri, "key": o.key, "size": o.size, "etag": o.etag}
            for i, o in enumerate(to_fetch)
        ]
        return spark.createDataFrame(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA))
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    position = F.row_number().over(Window.orderBy("key")) - 1
    return to_fetch.withColumn("position", position.cast("long")).select(*PLAN_SCHEMA.names)


@dataclass(frozen=True)
class ImageWrite:
    """What an ingest's write phase did (either path).

    Attributes:
        committed: Whether a version was written, and the counts.
        rejected: Rejections found while downloading (the plan's own come on top).
        written_ids: Ids of the rows written.
        objects: Objects downloaded.
        bytes: Bytes downloaded.
        tasks: Spark tasks run (0 on the local path).
    """

    committed: Committed
    rejected: list[RejectedImage]
    written_ids: list[str]
    objects: int
    bytes: int
    tasks: int = 0


def ingest_on_spark(
    spark: Any,
    store: ObjectStore,
    to_fetch: list[ObjectInfo] | Any,
    *,
    downloads: int,
    uri: str,
    layout: TableLayout,
    options: Any,
    rebuild: bool,
    replaced: set[str],
    delete_keys: list[str],
) -> ImageWrite:
    """Download, check and write ``to_fetch`` in Spark tasks; commit once.

    A rebuild in which no object is a valid image commits nothing (the caller raises).

    Args:
        spark: The SparkSession.
        store: The driver's object store (its settings travel to the tasks).
        to_fetch: The objects to download, in plan order: a list, or a DataFrame of
            ``uri, key, size, etag`` (a plan made on Spark).
        downloads: How many objects ``to_fetch`` holds.
        uri: ``images.lance``.
        layout: The table's layout (key, rows per file, compaction).
        options: The ingest's :class:`~vlm_lake.ingest.images.ImageIngestOptions`.
        rebuild: Overwrite the table instead of updating it.
        replaced: Ids already in the table whose object is downloaded again (changed).
        delete_keys: Ids whose rows are deleted (``delete_missing``).

    Raises:
        RuntimeError: The tasks wrote another number of rows than they accepted.
    """
    storage = store.storage_options(uri)
    tasks = max(1, min(downloads, math.ceil(downloads / options.objects_per_task)))
    task = FetchImagesTask(
        settings=store.settings,
        options=options,
        sink=FragmentSink(uri, IMAGE_SCHEMA, storage, layout.rows_per_fragment),
    )
    log.info("images: %d objects to download in %d Spark tasks", downloads, tasks)
    df = _plan_frame(spark, to_fetch).repartitionByRange(tasks, "position")
    written = run_fragment_job(df, task)
    rejected = [RejectedImage(**r) for s in written.stats for r in s["rejected"]]
    ids = [i for s in written.stats for i in s["written"]]
    written.check_rows(len(ids), "images the tasks accepted")
    if rebuild:
        if not ids:
            nothing = Committed(False, lance_io.MergeStats(0, 0, 0))
            return ImageWrite(nothing, rejected, ids, written.total("objects"), 0, tasks)
        fragments.commit_fragments(uri, IMAGE_SCHEMA, written.fragments, storage, mode="overwrite")
        stats = lance_io.MergeStats(len(ids), 0, 0)
    elif ids or delete_keys:
        updated = replaced & set(ids)
        remove = updated | set(delete_keys)
        fragments.replace_rows(
            uri, storage, key="image_id", remove=remove, fragments_json=written.fragments
        )
        stats = lance_io.MergeStats(len(ids) - len(updated), len(updated), len(delete_keys))
    else:
        stats = None
    if stats is not None:
        maintain(uri, storage, layout)
    committed = Committed(stats is not None, stats or lance_io.MergeStats(0, 0, 0))
    return ImageWrite(
        committed, rejected, ids, written.total("objects"), written.total("bytes"), tasks
    )
