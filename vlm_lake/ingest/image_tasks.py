"""Image ingest on Spark: tasks download, check and write fragments; the driver commits once.

The plan (what to download) is a list made on the driver, or a DataFrame when the plan ran
on Spark (:mod:`~vlm_lake.ingest.image_plan`). Its objects become ``tasks`` key ranges of
``(position, uri, key, size, etag)`` rows; each task downloads its
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
from vlm_lake.ingest.spark_plan import LISTING_SCHEMA
from vlm_lake.spark.fragment_job import FragmentSink, FragmentTask, run_fragment_job
from vlm_lake.store.object_store import ObjectInfo, ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import fragments, lance_io
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.tables.layout import TableLayout, maintain
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)

#: The plan's rows as they travel to the tasks: the staged listing's columns, and an
#: ordering position.
PLAN_SCHEMA = pa.schema([pa.field("position", pa.int64()), *LISTING_SCHEMA])


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


def _plan_frame(spark: Any, to_fetch: list[ObjectInfo] | Any, tasks: int) -> Any:
    """The downloads as ``tasks`` key ranges of :data:`PLAN_SCHEMA` rows.

    ``position`` grows with the key across partitions (``monotonically_increasing_id``
    after a range partitioning): it orders the tasks' fragments without a global sort
    through one partition.
    """
    from pyspark.sql import functions as F

    if isinstance(to_fetch, list):
        rows = [{"uri": o.uri, "key": o.key, "size": o.size, "etag": o.etag} for o in to_fetch]
        to_fetch = spark.createDataFrame(pa.Table.from_pylist(rows, schema=LISTING_SCHEMA))
    ranges = to_fetch.repartitionByRange(tasks, "key").sortWithinPartitions("key")
    return ranges.withColumn("position", F.monotonically_increasing_id()).select(*PLAN_SCHEMA.names)


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
    df = _plan_frame(spark, to_fetch, tasks)
    written = run_fragment_job(df, task)
    rejected = [RejectedImage(**r) for s in written.stats for r in s["rejected"]]
    ids = [i for s in written.stats for i in s["written"]]
    written.check_rows(len(ids), "images the tasks accepted")
    updated = set() if rebuild else replaced & set(ids)
    stats = lance_io.MergeStats(len(ids) - len(updated), len(updated), len(delete_keys))
    committed = Committed(bool(ids or delete_keys), stats)
    if committed.committed:  # a rebuild with no valid image commits nothing (caller raises)
        remove = None if rebuild else updated | set(delete_keys)
        fragments.commit_job(
            uri, IMAGE_SCHEMA, storage, written.fragments, key="image_id", remove=remove
        )
        maintain(uri, storage, layout)
    return ImageWrite(
        committed, rejected, ids, written.total("objects"), written.total("bytes"), tasks
    )
