"""Ingest raw image objects into ``image_lance``: incremental, quarantining, bounded memory.

A run lists the prefix (keys and ETags only), compares it with the *published* version of
the dataset (:mod:`~vlm_lake.ingest.image_plan`) and downloads only objects that are new
or whose ETag changed. Good images are upserted with one Lance ``merge_insert`` keyed on
``image_id``; bad ones (not an image, truncated, empty, a decompression bomb, a stem used
twice) become rows of ``rejected_images.lance`` with the reason. A run with nothing new
commits nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from vlm_lake.errors import SourceNotFoundError
from vlm_lake.ingest.changes import Committed, IngestReport, commit_changes
from vlm_lake.ingest.image_fetch import iter_image_batches
from vlm_lake.ingest.image_plan import ImagePlan, plan_images
from vlm_lake.ingest.image_tasks import ImageWrite, ingest_on_spark
from vlm_lake.ingest.quarantine import (
    RejectedImage,
    check_on_bad_input,
    write_rejections,
)
from vlm_lake.ingest.spark_plan import SparkPlan
from vlm_lake.spark.engine import check_engine, use_spark
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA, REJECTED_IMAGES_SCHEMA
from vlm_lake.tables.layout import IMAGES_LAYOUT
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageIngestOptions:
    """Tuning knobs and policies of the image ingest.

    Attributes:
        workers: Parallel downloads.
        batch_rows: Maximum rows per Arrow batch handed to Lance.
        batch_bytes: Maximum image bytes per batch; bounds memory together with workers.
        max_rows_per_file: Rows per Lance data file (fragment); see
            :data:`~vlm_lake.tables.layout.IMAGES_LAYOUT` for why this many.
        full_rebuild: Re-download everything and overwrite the table instead of merging.
        on_bad_input: ``quarantine`` (record and go on) or ``fail`` (raise at the first).
        delete_missing: Delete rows whose source object is gone (mirror the prefix); by
            default they are kept and counted as ``missing_from_source``.
        engine: ``local`` (a thread pool in this process), ``spark`` (Spark tasks download
            and write fragments; needs a session) or ``auto``: Spark when a session is
            given and at least ``spark_min_objects`` objects are to be downloaded.
        spark_min_objects: Downloads from which ``auto`` uses Spark (below, starting the
            job costs more than it saves; docs/benchmarks.md).
        objects_per_task: Objects per Spark task (fewer tasks: fewer, larger fragments).
        plan_on_spark_from: Listed keys from which the plan is a Spark join over a staged
            listing instead of a dict on the driver (unless ``engine="local"``).
        list_workers: LIST streams at once when such a listing is read (one per
            sub-prefix, :mod:`vlm_lake.store.parallel_listing`).
        signals: Measure each image's quality signals on the decode that checks it
            (:mod:`vlm_lake.imaging.signals`); off leaves those columns null.
    """

    workers: int = 16
    batch_rows: int = 256
    batch_bytes: int = 64 * 1024 * 1024
    max_rows_per_file: int = IMAGES_LAYOUT.rows_per_fragment
    full_rebuild: bool = False
    on_bad_input: str = "quarantine"
    delete_missing: bool = False
    engine: str = "auto"
    spark_min_objects: int = 5000
    objects_per_task: int = 2000
    plan_on_spark_from: int = 200_000
    list_workers: int = 8
    signals: bool = True

    def __post_init__(self) -> None:
        check_on_bad_input(self.on_bad_input)
        check_engine(self.engine)
        if self.objects_per_task < 1:
            raise ValueError(f"objects_per_task={self.objects_per_task!r} must be at least 1")

    def use_spark(self, spark: Any, downloads: int) -> bool:
        """Whether this run downloads on Spark (see ``engine``).

        Raises:
            ValueError: ``engine="spark"`` without a Spark session.
        """
        return use_spark(self.engine, spark, downloads, self.spark_min_objects)


@dataclass(frozen=True)
class ImageIngestReport(IngestReport):
    """Result of an image ingest (see :class:`~vlm_lake.ingest.changes.IngestReport`).

    Attributes:
        objects: Objects downloaded.
        bytes: Bytes downloaded.
        tasks: Spark tasks that downloaded them (0: this process's thread pool).
    """

    objects: int = 0
    bytes: int = 0
    tasks: int = 0


def ingest_images(
    store: ObjectStore,
    images_uri: str,
    dataset_uri: str,
    options: ImageIngestOptions | None = None,
    *,
    rejects_uri: str | None = None,
    record_rejects: bool = True,
    spark: Any = None,
) -> ImageIngestReport:
    """Bring the Lance dataset at ``dataset_uri`` up to date with the images under ``images_uri``.

    Incremental by default: the listing is compared with the published version and only new
    or changed objects are downloaded and merged (one commit). Without a published version,
    with ``full_rebuild``, or when the table's schema is older than this code, everything is
    downloaded and the table is overwritten (one commit). Bytes are stored exactly as
    uploaded; memory is bounded by ``batch_bytes`` plus the in-flight downloads. A failure
    (a network error, ``on_bad_input="fail"``) commits nothing.

    Args:
        store: Object store to read from and whose settings Lance uses.
        images_uri: Prefix or folder holding the images.
        dataset_uri: Where ``images.lance`` goes.
        options: Knobs and policies.
        rejects_uri: Where ``rejected_images.lance`` goes; None keeps rejections only in
            the report (and then nothing is carried over between runs).
        record_rejects: Rewrite ``rejects_uri`` with this run's rejections. False only
            reads it (earlier rejections of unchanged objects are still not downloaded
            again): for a run that materializes ``image_lance`` without its quarantine.
        spark: A SparkSession, or a function returning one (called only if the run
            downloads on Spark, see ``options.engine``).

    Returns:
        An :class:`ImageIngestReport`; the new version is a candidate until it is published.

    Raises:
        SourceNotFoundError: No objects under ``images_uri``, or none is a valid image.
        InvalidImageError: A bad object, with ``on_bad_input="fail"``.
        DuplicateKeyError: Two objects share a stem, with ``on_bad_input="fail"``.
    """
    options = options or ImageIngestOptions()
    storage = store.storage_options(dataset_uri)
    base, rebuild = _published_base(dataset_uri, storage, options.full_rebuild)
    plan = plan_images(
        store, images_uri, dataset_uri, None if rebuild else base, options, rejects_uri, spark
    )
    log.info(
        "images: %d listed under %s, %d to download, %d unchanged, %d rejected so far, %s",
        plan.listed,
        images_uri,
        plan.downloads,
        plan.unchanged,
        len(plan.rejected),
        "full rebuild" if rebuild else f"merging into published version {base}",
    )
    rejects_out = rejects_uri if record_rejects else None
    layout = dataclasses.replace(IMAGES_LAYOUT, rows_per_fragment=options.max_rows_per_file)
    delete_keys = plan.missing if (options.delete_missing and not rebuild) else []
    started = time.perf_counter()
    if isinstance(plan, SparkPlan) or options.use_spark(spark, plan.downloads):
        session = spark() if callable(spark) else spark
        out = _ingest_on_spark_then_release(
            plan,
            session,
            store,
            plan.to_fetch,
            downloads=plan.downloads,
            uri=dataset_uri,
            layout=layout,
            options=options,
            rebuild=rebuild,
            replaced=plan.replaced,
            delete_keys=delete_keys,
        )
    else:
        out = _write_local(store, plan, options, dataset_uri, layout, rebuild, delete_keys)
    rejected = [*plan.rejected, *out.rejected]
    if rebuild and not out.written_ids:
        _save_rejects(store, rejects_out, rejected)
        _no_valid_image(plan, images_uri, rejected)
    _save_rejects(store, rejects_out, rejected)
    summary = lance_io.summarize(lance_io.open_dataset(dataset_uri, storage), dataset_uri)
    return _report(summary, plan, out, rejected, base, rebuild, options, started)


def _report(
    summary: lance_io.DatasetSummary,
    plan: ImagePlan | SparkPlan,
    out: ImageWrite,
    rejected: list[RejectedImage],
    base: int | None,
    rebuild: bool,
    options: ImageIngestOptions,
    started: float,
) -> ImageIngestReport:
    """The run's report: the plan's counts and what the write phase did."""
    return ImageIngestReport(
        summary=summary,
        committed=out.committed.committed,
        full_rebuild=rebuild,
        base_version=base,
        inserted=out.committed.stats.inserted,
        updated=out.committed.stats.updated,
        unchanged=plan.unchanged,
        deleted=out.committed.stats.deleted,
        missing_from_source=0 if options.delete_missing else len(plan.missing),
        rejected=rejected,
        written_ids=out.written_ids,
        seconds=time.perf_counter() - started,
        objects=out.objects,
        bytes=out.bytes,
        tasks=out.tasks,
    )


def _ingest_on_spark_then_release(
    plan: ImagePlan | SparkPlan, *args: Any, **kwargs: Any
) -> ImageWrite:
    """:func:`ingest_on_spark`, then free what a Spark plan cached, whatever happened."""
    try:
        return ingest_on_spark(*args, **kwargs)
    finally:
        if isinstance(plan, SparkPlan):
            plan.release()


def _write_local(
    store: ObjectStore,
    plan: ImagePlan,
    options: ImageIngestOptions,
    dataset_uri: str,
    layout: Any,
    rebuild: bool,
    delete_keys: list[str],
) -> ImageWrite:
    """Download with this process's thread pool and merge (or overwrite) in one commit."""
    progress = Progress(log, "images")
    rejected: list[RejectedImage] = []
    written: list[str] = []
    batches = iter_image_batches(store, plan.to_fetch, options, progress, rejected, written)
    first = next(batches, None)
    if rebuild and first is None:  # nothing valid: the caller raises, nothing is written
        return ImageWrite(Committed(False, lance_io.MergeStats(0, 0, 0)), rejected, [], 0, 0)
    result = commit_changes(
        itertools.chain([first] if first is not None else [], batches),
        uri=dataset_uri,
        storage=store.storage_options(dataset_uri),
        schema=IMAGE_SCHEMA,
        layout=layout,
        rebuild=rebuild,
        delete_keys=delete_keys,
        message=f"ingest images into {dataset_uri} (full rebuild)",
    )
    progress.done()
    return ImageWrite(result, rejected, written, progress.count, progress.nbytes)


def quarantine_images(
    store: ObjectStore,
    images_uri: str,
    dataset_uri: str,
    options: ImageIngestOptions | None = None,
    *,
    rejects_uri: str,
) -> list[RejectedImage]:
    """Find the source's current rejections and record them, without writing ``image_lance``.

    The same rules as :func:`ingest_images`: the listing is compared with the published
    version (read only), names and stems are checked, objects that are new or changed since
    are downloaded and decoded (then dropped), and earlier ``decode`` rejections at the
    same ETag are carried over. ``rejected_images.lance`` is rewritten if the set changed.

    Returns:
        The current rejections, in source order.

    Raises:
        SourceNotFoundError: No objects under ``images_uri``.
        InvalidImageError: A bad object, with ``on_bad_input="fail"``.
    """
    options = options or ImageIngestOptions()
    storage = store.storage_options(dataset_uri)
    pub = None if options.full_rebuild else publish.published(dataset_uri, storage)
    version = pub.version if pub else None
    plan = plan_images(store, images_uri, dataset_uri, version, options, rejects_uri)
    assert isinstance(plan, ImagePlan)  # without a Spark session the plan is made here
    rejected = list(plan.rejected)
    progress = Progress(log, "images checked")
    for _ in iter_image_batches(store, plan.to_fetch, options, progress, rejected, []):
        pass  # good images are not kept: only the rejections are recorded
    progress.done()
    _save_rejects(store, rejects_uri, rejected)
    return rejected


def _published_base(
    dataset_uri: str, storage: dict[str, str], full_rebuild: bool
) -> tuple[int | None, bool]:
    """The published version to merge into, and whether this run rebuilds instead.

    A rebuild: nothing published, a rebuild was asked for, or the published schema is
    older than this code's. Only the version's metadata is read here.
    """
    base = None if full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    if base is None:
        return None, True
    if not lance_io.open_dataset(dataset_uri, storage, base).schema.equals(IMAGE_SCHEMA):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            base,
        )
        return base, True
    return base, False


def _no_valid_image(plan: ImagePlan, images_uri: str, rejected: list[RejectedImage]) -> None:
    """A table of only rejects is an error, not an empty table (the rejections are saved)."""
    first = rejected[0]
    raise SourceNotFoundError(
        f"none of the {plan.listed} objects under images_uri={images_uri!r} is a valid "
        f"image; {len(rejected)} rejected (first: {first.source_uri!r}: {first.reason})"
    )


def _save_rejects(
    store: ObjectStore, rejects_uri: str | None, rejected: list[RejectedImage]
) -> None:
    if rejects_uri is not None:
        storage = store.storage_options(rejects_uri)
        write_rejections(rejects_uri, REJECTED_IMAGES_SCHEMA, rejected, storage)
