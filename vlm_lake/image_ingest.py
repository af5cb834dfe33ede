"""Ingest raw image objects into ``image_lance``: incremental, quarantining, bounded memory.

A run lists the prefix (keys and ETags only), compares it with the *published* version of
the dataset and downloads only objects that are new or whose ETag changed. Good images are
upserted with one Lance ``merge_insert`` keyed on ``image_id``; bad ones (not an image,
truncated, empty, a decompression bomb, a stem used twice) become rows of
``rejected_images.lance`` with the reason. A run with nothing new commits nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from vlm_lake import lance_io, publish, uris
from vlm_lake.errors import DuplicateKeyError, InvalidImageError, SourceNotFoundError
from vlm_lake.images import IMAGE_SUFFIXES, probe_image
from vlm_lake.lance_layout import IMAGES_LAYOUT, maintain
from vlm_lake.object_store import ObjectInfo, ObjectStore
from vlm_lake.parallel import bounded_parallel_map
from vlm_lake.progress import Progress
from vlm_lake.quarantine import (
    REJECTED_IMAGES_SCHEMA,
    RejectedImage,
    check_on_bad_input,
    read_rejected_images,
    write_rejections,
)

log = logging.getLogger(__name__)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        # Uncompressed: JPEG/PNG bytes do not compress (zstd and Lance's default left 1 GB
        # of photos at 1 GB), and not trying writes 4-7x faster and scans 1.2-1.5x faster.
        # Plain binary, not Lance blob encoding: blobs read 100 random rows no faster (4-5
        # ms) and read back as descriptors, so every reader of image_data would change.
        # ``python -m benchmarks --only layout``; README "Lance layout, chosen by numbers".
        pa.field(
            "image_data",
            pa.binary(),
            nullable=False,
            metadata={"lance-encoding:compression": "none"},
        ),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_etag", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ImageIngestOptions:
    """Tuning knobs and policies of the image ingest.

    Attributes:
        workers: Parallel downloads.
        batch_rows: Maximum rows per Arrow batch handed to Lance.
        batch_bytes: Maximum image bytes per batch; bounds memory together with workers.
        max_rows_per_file: Rows per Lance data file (fragment); see
            :data:`~vlm_lake.lance_layout.IMAGES_LAYOUT` for why this many.
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
class IngestReport:
    """Result of an image ingest.

    Attributes:
        summary: The dataset's latest version after the run (the candidate to check).
        committed: Whether this run wrote a new version (False when nothing changed).
        full_rebuild: Whether the table was rewritten rather than merged.
        base_version: The published version the changes were computed against, if any.
        inserted: Rows added.
        updated: Rows replaced because their object changed.
        unchanged: Objects skipped because their key and ETag were already ingested.
        deleted: Rows deleted because their object is gone (``delete_missing``).
        missing_from_source: Rows kept although their object is gone.
        rejected: Every current rejection (new and carried over).
        written_ids: The ``image_id`` of every row written by this run.
        objects: Objects downloaded.
        bytes: Bytes downloaded.
        seconds: Wall time of the run.
    """

    summary: lance_io.DatasetSummary
    committed: bool
    full_rebuild: bool
    base_version: int | None
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    missing_from_source: int
    rejected: list[RejectedImage]
    written_ids: list[str] = field(repr=False)
    objects: int
    bytes: int
    seconds: float


@dataclass
class _Plan:
    """What to download, given the listing and what the lake already holds."""

    to_fetch: list[ObjectInfo]
    rejected: list[RejectedImage]
    unchanged: int
    missing: list[str]
    listed: int


def _reject(info: ObjectInfo, stage: str, reason: str, strict: bool) -> RejectedImage:
    if strict:
        if stage == "duplicate":
            raise DuplicateKeyError(reason)
        raise InvalidImageError(info.uri, reason)
    return RejectedImage(info.uri, uris.stem(info.key), info.etag, info.size, stage, reason)


def plan_image_ingest(
    store: ObjectStore,
    images_uri: str,
    existing: dict[str, tuple[str, str]],
    previous_rejects: list[RejectedImage],
    *,
    strict: bool = False,
) -> _Plan:
    """Decide which objects to download, from the listing alone (no bytes are read).

    Args:
        store: Object store to list.
        images_uri: The images prefix.
        existing: ``image_id -> (source_uri, source_etag)`` of the published table.
        previous_rejects: Rejections of the previous run; a ``decode`` rejection whose
            object still has the same ETag is carried over without downloading again.
        strict: Raise at the first bad object instead of rejecting it.

    Returns:
        The plan: objects to fetch (in key order), rejections, and counts.
    """
    rejected: list[RejectedImage] = []
    by_stem: dict[str, list[ObjectInfo]] = {}
    listed = 0
    for info in store.list(images_uri):
        listed += 1
        if uris.suffix(info.key) not in IMAGE_SUFFIXES:
            reason = (
                f"the name does not end in an image extension; expected one of "
                f"{', '.join(IMAGE_SUFFIXES)} (any case)"
            )
            rejected.append(_reject(info, "listing", reason, strict))
            continue
        by_stem.setdefault(uris.stem(info.key), []).append(info)
    known_bad = {(r.source_uri, r.etag): r for r in previous_rejects if r.stage == "decode"}
    to_fetch: list[ObjectInfo] = []
    unchanged = 0
    for image_id, infos in by_stem.items():
        kept_uri = existing.get(image_id, ("", ""))[0]
        winner = next((i for i in infos if i.uri == kept_uri), infos[0])
        for other in infos:
            if other is not winner:
                reason = (
                    f"image_id {image_id!r} of {other.uri!r} is also the file stem of "
                    f"{winner.uri!r}, which was kept; image ids are file stems and must be "
                    "unique across folders (rename one of the files)"
                )
                rejected.append(_reject(other, "duplicate", reason, strict))
        if existing.get(image_id) == (winner.uri, winner.etag):
            unchanged += 1
        elif (winner.uri, winner.etag) in known_bad:
            known = known_bad[(winner.uri, winner.etag)]
            if strict:
                raise InvalidImageError(winner.uri, known.reason)
            rejected.append(known)
        else:
            to_fetch.append(winner)
    to_fetch.sort(key=lambda i: i.key)
    missing = sorted(set(existing) - set(by_stem))
    return _Plan(to_fetch, rejected, unchanged, missing, listed)


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
) -> IngestReport:
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

    Returns:
        An :class:`IngestReport`; the new version is a candidate until it is published.

    Raises:
        SourceNotFoundError: No objects under ``images_uri``, or none is a valid image.
        InvalidImageError: A bad object, with ``on_bad_input="fail"``.
        DuplicateKeyError: Two objects share a stem, with ``on_bad_input="fail"``.
    """
    options = options or ImageIngestOptions()
    storage = store.storage_options(dataset_uri)
    strict = options.on_bad_input == "fail"
    base = None if options.full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    existing = _existing_images(dataset_uri, storage, base) if base is not None else None
    rebuild = existing is None
    previous = read_rejected_images(rejects_uri, storage) if rejects_uri else []
    plan = plan_image_ingest(store, images_uri, existing or {}, previous, strict=strict)
    if plan.listed == 0:
        raise SourceNotFoundError(
            f"no objects under images_uri={images_uri!r}; expected image files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
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
    delete = plan.missing if (options.delete_missing and not rebuild) else []
    first = next(batches, None)  # peek: a run that writes nothing must not commit
    stats = lance_io.MergeStats(0, 0, 0)
    rejects_storage = store.storage_options(rejects_uri) if rejects_uri else {}
    if rebuild:
        if first is None:  # a table of only rejects is an error, not an empty table
            _save_rejects(rejects_uri, rejected, rejects_storage)
            raise SourceNotFoundError(
                f"none of the {plan.listed} objects under images_uri={images_uri!r} is a valid "
                f"image; {len(rejected)} rejected (first: {rejected[0].source_uri!r}: "
                f"{rejected[0].reason})"
            )
        lance_io.write_batches(
            itertools.chain([first], batches),
            dataset_uri,
            IMAGE_SCHEMA,
            storage,
            mode="overwrite",
            max_rows_per_file=options.max_rows_per_file,
            commit_message=f"ingest images from {images_uri} (full rebuild)",
        )
        stats = lance_io.MergeStats(len(written), 0, 0)
    elif first is not None or delete:
        _, stats = lance_io.merge_batches(
            itertools.chain([first] if first is not None else [], batches),
            dataset_uri,
            IMAGE_SCHEMA,
            storage,
            on="image_id",
            delete_keys=delete,
        )
    committed = rebuild or first is not None or bool(delete)
    if committed:  # index (and, by policy, compaction) on top: the latest is the candidate
        layout = dataclasses.replace(IMAGES_LAYOUT, rows_per_fragment=options.max_rows_per_file)
        maintain(dataset_uri, storage, layout)
    ds = lance_io.open_dataset(dataset_uri, storage)
    progress.done()
    _save_rejects(rejects_uri, rejected, rejects_storage)
    return IngestReport(
        summary=lance_io.summarize(ds, dataset_uri),
        committed=committed,
        full_rebuild=rebuild,
        base_version=base,
        inserted=stats.inserted,
        updated=stats.updated,
        unchanged=plan.unchanged,
        deleted=stats.deleted,
        missing_from_source=0 if options.delete_missing else len(plan.missing),
        rejected=rejected,
        written_ids=written,
        objects=progress.count,
        bytes=progress.nbytes,
        seconds=progress.seconds,
    )


def _save_rejects(
    rejects_uri: str | None, rejected: list[RejectedImage], storage: dict[str, str]
) -> None:
    if rejects_uri is not None:
        write_rejections(rejects_uri, REJECTED_IMAGES_SCHEMA, rejected, storage)
