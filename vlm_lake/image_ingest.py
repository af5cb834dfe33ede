"""Ingest raw image objects into the ``image_lance`` dataset, streaming in bounded memory."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from vlm_lake import lance_io, uris
from vlm_lake.errors import DuplicateKeyError, SourceNotFoundError
from vlm_lake.images import IMAGE_SUFFIXES, probe_image
from vlm_lake.object_store import ObjectInfo, ObjectStore
from vlm_lake.parallel import bounded_parallel_map
from vlm_lake.progress import Progress

log = logging.getLogger(__name__)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_data", pa.binary(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ImageIngestOptions:
    """Tuning knobs of the image ingest.

    Attributes:
        workers: Parallel downloads.
        batch_rows: Maximum rows per Arrow batch handed to Lance.
        batch_bytes: Maximum image bytes per batch; bounds memory together with workers.
        max_rows_per_file: Rows per Lance data file.
    """

    workers: int = 16
    batch_rows: int = 256
    batch_bytes: int = 64 * 1024 * 1024
    max_rows_per_file: int = 64 * 1024


@dataclass(frozen=True)
class IngestReport:
    """Result of an ingest: the written dataset and what it took."""

    summary: lance_io.DatasetSummary
    objects: int
    bytes: int
    seconds: float


def _fetch(store: ObjectStore, info: ObjectInfo) -> dict[str, object]:
    data = store.read_bytes(info.uri)
    meta = probe_image(data, info.uri)
    return {
        "image_id": uris.stem(info.key),
        "image_data": data,
        "source_uri": info.uri,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "format": meta.format,
        "width": meta.width,
        "height": meta.height,
    }


def iter_image_batches(
    store: ObjectStore, images_uri: str, options: ImageIngestOptions, progress: Progress
) -> Iterator[pa.RecordBatch]:
    """Download, validate and batch every image under ``images_uri``.

    Yields:
        Record batches of :data:`IMAGE_SCHEMA`, each bounded by rows and bytes.

    Raises:
        InvalidImageError: An object is not a decodable image (names the object).
        DuplicateKeyError: Two objects have the same file stem.
        SourceNotFoundError: No image objects exist under ``images_uri``.
    """
    skipped: list[str] = []  # non-image names; only the first few are kept
    skipped_count = 0

    def images_only() -> Iterator[ObjectInfo]:
        nonlocal skipped_count
        for info in store.list(images_uri):
            if uris.suffix(info.key) in IMAGE_SUFFIXES:
                yield info
                continue
            skipped_count += 1
            if len(skipped) < 5:
                skipped.append(info.uri)

    listing = images_only()
    seen: dict[str, str] = {}
    rows: list[dict[str, object]] = []
    pending_bytes = 0
    for row in bounded_parallel_map(
        lambda info: _fetch(store, info), listing, workers=options.workers
    ):
        image_id = str(row["image_id"])
        if image_id in seen:
            raise DuplicateKeyError(
                f"image_id {image_id!r} comes from two objects: {seen[image_id]!r} and "
                f"{row['source_uri']!r}; image ids are file stems and must be unique"
            )
        seen[image_id] = str(row["source_uri"])
        rows.append(row)
        pending_bytes += int(row["size_bytes"])  # type: ignore[call-overload]
        progress.update(1, int(row["size_bytes"]))  # type: ignore[call-overload]
        if len(rows) >= options.batch_rows or pending_bytes >= options.batch_bytes:
            yield pa.RecordBatch.from_pylist(rows, schema=IMAGE_SCHEMA)
            rows, pending_bytes = [], 0
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=IMAGE_SCHEMA)
    if skipped_count:
        log.warning(
            "skipped %d object(s) under %s whose names do not end in an image extension (%s), "
            "for example: %s",
            skipped_count,
            images_uri,
            ", ".join(IMAGE_SUFFIXES),
            ", ".join(skipped),
        )
    if not seen:
        raise SourceNotFoundError(
            f"no image objects under images_uri={images_uri!r}; expected keys ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )


def ingest_images(
    store: ObjectStore,
    images_uri: str,
    dataset_uri: str,
    options: ImageIngestOptions | None = None,
) -> IngestReport:
    """Write every image under ``images_uri`` to the Lance dataset at ``dataset_uri``.

    Bytes are stored exactly as uploaded. Downloads run in parallel; memory is bounded by
    ``batch_bytes`` plus the in-flight downloads, whatever the number of images. The write
    is one commit, so a failure (a bad image, a network error) leaves the previous version.

    Args:
        store: Object store to read from and whose settings Lance uses.
        images_uri: Prefix or folder holding the images.
        dataset_uri: Where ``images.lance`` goes.
        options: Tuning knobs.

    Returns:
        An :class:`IngestReport`.
    """
    options = options or ImageIngestOptions()
    progress = Progress(log, "images")
    log.info("ingesting images from %s into %s", images_uri, dataset_uri)
    ds = lance_io.write_batches(
        iter_image_batches(store, images_uri, options, progress),
        dataset_uri,
        IMAGE_SCHEMA,
        store.storage_options(dataset_uri),
        mode="overwrite",
        max_rows_per_file=options.max_rows_per_file,
        commit_message=f"ingest images from {images_uri}",
    )
    progress.done()
    return IngestReport(
        lance_io.summarize(ds, dataset_uri), progress.count, progress.nbytes, progress.seconds
    )
