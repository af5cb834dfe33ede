"""Download image objects, check and hash them, and yield bounded Arrow batches.

Shared by both write paths of the image ingest: this process's thread pool
(:mod:`vlm_lake.ingest.images`) and the Spark tasks (:mod:`vlm_lake.ingest.image_tasks`).
An object that is not a decodable image becomes a :class:`RejectedImage` (stage
``decode``) instead of a row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.decode import probe_image
from vlm_lake.imaging.signals import THUMB, batch_signals
from vlm_lake.ingest.quarantine import RejectedImage
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectInfo, ObjectStore
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.util.parallel import bounded_parallel_map
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)

#: Row key of the signals thumbnail between the download threads and the batch.
_THUMB = "_thumbnail"
#: Stands in for a missing thumbnail in a batch (its signals are masked to null).
_BLANK = bytes(THUMB * THUMB)


def _fetch(
    store: ObjectStore, info: ObjectInfo, signals: bool
) -> dict[str, object] | RejectedImage:
    data = store.read_bytes(info.uri)
    try:
        meta = probe_image(data, info.uri, signals=signals)
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
        _THUMB: meta.thumbnail,
    }


def _record_batch(rows: list[dict[str, object]]) -> pa.RecordBatch:
    """The rows as an ``IMAGE_SCHEMA`` batch, with the signals of those that have a thumbnail."""
    thumbs = [row.pop(_THUMB) for row in rows]
    batch = pa.RecordBatch.from_pylist(rows, schema=IMAGE_SCHEMA)
    measured = np.array([t is not None for t in thumbs])
    if not measured.any():
        return batch
    sizes = [(int(r["width"]), int(r["height"])) for r in rows]  # type: ignore[call-overload]
    present = [t if t is not None else _BLANK for t in thumbs]
    columns = batch.columns
    for name, values in batch_signals(present, sizes).items():
        field = IMAGE_SCHEMA.field(name)
        index = IMAGE_SCHEMA.get_field_index(name)
        columns[index] = pa.array(values, type=field.type, mask=~measured)
    return pa.RecordBatch.from_arrays(columns, schema=IMAGE_SCHEMA)


def iter_image_batches(
    store: ObjectStore,
    to_fetch: list[ObjectInfo],
    options: Any,
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
        lambda info: _fetch(store, info, options.signals), to_fetch, workers=options.workers
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
            yield _record_batch(rows)
            rows, pending_bytes = [], 0
    if rows:
        yield _record_batch(rows)
