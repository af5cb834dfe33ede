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
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from vlm_lake.errors import InvalidImageError, SourceNotFoundError
from vlm_lake.imaging.decode import IMAGE_SUFFIXES, probe_image
from vlm_lake.ingest.changes import IngestReport, commit_changes
from vlm_lake.ingest.image_plan import ImagePlan, plan_image_ingest
from vlm_lake.ingest.quarantine import (
    RejectedImage,
    check_on_bad_input,
    read_rejected_images,
    write_rejections,
)
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectInfo, ObjectStore
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA, REJECTED_IMAGES_SCHEMA
from vlm_lake.tables.layout import IMAGES_LAYOUT
from vlm_lake.util.parallel import bounded_parallel_map
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
    """

    workers: int = 16
    batch_rows: int = 256
    batch_bytes: int = 64 * 1024 * 1024
    max_rows_per_file: int = IMAGES_LAYOUT.rows_per_fragment
    full_rebuild: bool = False
    on_bad_input: str = "quarantine"
    delete_missing: bool = False

    def __post_init__(self) -> None:
        check_on_bad_input(self.on_bad_input)


@dataclass(frozen=True)
class ImageIngestReport(IngestReport):
    """Result of an image ingest (see :class:`~vlm_lake.ingest.changes.IngestReport`).

    Attributes:
        objects: Objects downloaded.
        bytes: Bytes downloaded.
    """

    objects: int = 0
    bytes: int = 0


def _fetch(store: ObjectStore, info: ObjectInfo) -> dict[str, object] | RejectedImage:
    data = store.read_bytes(info.uri)
    try:
        meta = probe_image(data, info.uri)
    except InvalidImageError as exc:
        return RejectedImage(
            info.uri, uris.stem(info.key), info.etag, len(data), "decode", exc.problem
        )
    return {
        "image_id": uris.stem(info.key),
        "image_data": data,
        "source_uri": info.uri,
        "source_etag": info.etag,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "format": meta.format,
        "width": meta.width,
        "height": meta.height,
    }


def iter_image_batches(
    store: ObjectStore,
    to_fetch: list[ObjectInfo],
    options: ImageIngestOptions,
    progress: Progress,
    rejected: list[RejectedImage],
    written_ids: list[str],
) -> Iterator[pa.RecordBatch]:
    """Download and validate ``to_fetch`` in parallel and yield bounded record batches.

    Objects that are not decodable images are appended to ``rejected`` (or raise, with
    ``on_bad_input="fail"``); the ids of the rows yielded are appended to ``written_ids``.

    Yields:
        Record batches of :data:`IMAGE_SCHEMA`, each bounded by rows and bytes.
    """
    rows: list[dict[str, object]] = []
    pending_bytes = 0
    for row in bounded_parallel_map(
        lambda info: _fetch(store, info), to_fetch, workers=options.workers
    ):
        if isinstance(row, RejectedImage):
            if options.on_bad_input == "fail":
                raise InvalidImageError(row.source_uri, row.reason)
            log.warning("quarantined %s: %s", row.source_uri, row.reason)
            rejected.append(row)
            progress.update(1, row.size_bytes)
            continue
        size = int(row["size_bytes"])  # type: ignore[call-overload]
        written_ids.append(str(row["image_id"]))
        rows.append(row)
        pending_bytes += size
        progress.update(1, size)
        if len(rows) >= options.batch_rows or pending_bytes >= options.batch_bytes:
            yield pa.RecordBatch.from_pylist(rows, schema=IMAGE_SCHEMA)
            rows, pending_bytes = [], 0
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=IMAGE_SCHEMA)


def _existing_images(
    dataset_uri: str, storage: dict[str, str], version: int
) -> dict[str, tuple[str, str]] | None:
    """``image_id -> (source_uri, source_etag)`` of one version; None if its schema is old."""
    ds = lance_io.open_dataset(dataset_uri, storage, version)
    if not ds.schema.equals(IMAGE_SCHEMA):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            version,
        )
        return None
    return lance_io.column_map(ds, "image_id", "source_uri", "source_etag")


def ingest_images(
    store: ObjectStore,
    images_uri: str,
    dataset_uri: str,
    options: ImageIngestOptions | None = None,
    *,
    rejects_uri: str | None = None,
    record_rejects: bool = True,
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

    Returns:
        An :class:`ImageIngestReport`; the new version is a candidate until it is published.

    Raises:
        SourceNotFoundError: No objects under ``images_uri``, or none is a valid image.
        InvalidImageError: A bad object, with ``on_bad_input="fail"``.
        DuplicateKeyError: Two objects share a stem, with ``on_bad_input="fail"``.
    """
    options = options or ImageIngestOptions()
    storage = store.storage_options(dataset_uri)
    base, existing = _published_state(dataset_uri, storage, options.full_rebuild)
    plan = _plan(store, images_uri, existing, options, rejects_uri)
    rebuild = existing is None
    log.info(
        "images: %d listed under %s, %d to download, %d unchanged, %d rejected so far, %s",
        plan.listed,
        images_uri,
        len(plan.to_fetch),
        plan.unchanged,
        len(plan.rejected),
        "full rebuild" if rebuild else f"merging into published version {base}",
    )
    progress = Progress(log, "images")
    rejected = list(plan.rejected)
    written: list[str] = []
    batches = iter_image_batches(store, plan.to_fetch, options, progress, rejected, written)
    rejects_out = rejects_uri if record_rejects else None
    layout = dataclasses.replace(IMAGES_LAYOUT, rows_per_fragment=options.max_rows_per_file)
    result = commit_changes(
        _non_empty_rebuild(batches, rebuild, plan, images_uri, rejected, store, rejects_out),
        uri=dataset_uri,
        storage=storage,
        schema=IMAGE_SCHEMA,
        layout=layout,
        rebuild=rebuild,
        delete_keys=plan.missing if (options.delete_missing and not rebuild) else [],
        message=f"ingest images from {images_uri} (full rebuild)",
    )
    progress.done()
    _save_rejects(store, rejects_out, rejected)
    return ImageIngestReport(
        summary=lance_io.summarize(lance_io.open_dataset(dataset_uri, storage), dataset_uri),
        committed=result.committed,
        full_rebuild=rebuild,
        base_version=base,
        inserted=result.stats.inserted,
        updated=result.stats.updated,
        unchanged=plan.unchanged,
        deleted=result.stats.deleted,
        missing_from_source=0 if options.delete_missing else len(plan.missing),
        rejected=rejected,
        written_ids=written,
        seconds=progress.seconds,
        objects=progress.count,
        bytes=progress.nbytes,
    )


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
    existing = _existing_images(dataset_uri, storage, pub.version) if pub else None
    plan = _plan(store, images_uri, existing, options, rejects_uri)
    rejected = list(plan.rejected)
    progress = Progress(log, "images checked")
    for _ in iter_image_batches(store, plan.to_fetch, options, progress, rejected, []):
        pass  # good images are not kept: only the rejections are recorded
    progress.done()
    _save_rejects(store, rejects_uri, rejected)
    return rejected


def _published_state(
    dataset_uri: str, storage: dict[str, str], full_rebuild: bool
) -> tuple[int | None, dict[str, tuple[str, str]] | None]:
    """The published version to merge into and its ``image_id -> (uri, etag)``.

    ``(None, None)`` or ``(version, None)`` mean a full rebuild: nothing published, a
    rebuild was asked for, or the published schema is older than this code's.
    """
    base = None if full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    if base is None:
        return None, None
    return base, _existing_images(dataset_uri, storage, base)


def _plan(
    store: ObjectStore,
    images_uri: str,
    existing: dict[str, tuple[str, str]] | None,
    options: ImageIngestOptions,
    rejects_uri: str | None,
) -> ImagePlan:
    """Plan from the listing, with the previous rejections; an empty source is an error."""
    storage = store.storage_options(rejects_uri) if rejects_uri else {}
    previous = read_rejected_images(rejects_uri, storage) if rejects_uri else []
    strict = options.on_bad_input == "fail"
    plan = plan_image_ingest(store, images_uri, existing or {}, previous, strict=strict)
    if plan.listed == 0:
        raise SourceNotFoundError(
            f"no objects under images_uri={images_uri!r}; expected image files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    return plan


def _non_empty_rebuild(
    batches: Iterator[pa.RecordBatch],
    rebuild: bool,
    plan: ImagePlan,
    images_uri: str,
    rejected: list[RejectedImage],
    store: ObjectStore,
    rejects_uri: str | None,
) -> Iterator[pa.RecordBatch]:
    """``batches``, but a rebuild with no valid image raises instead of writing no table.

    A table of only rejects is an error, not an empty table; the rejections are saved
    first, so the quarantine says why.
    """
    produced = False
    for batch in batches:
        produced = True
        yield batch
    if rebuild and not produced:
        _save_rejects(store, rejects_uri, rejected)
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
