"""The alpaca-style training JSON's record format, and its single-stream export.

Output: a JSON array of ``{"instruction": text, "input": [hex of each present image, in
slot order], "output": ""}``, one record per line. :func:`format_record` is the one
definition of a record. :func:`export_training_json` writes the whole file from one
stream: the asset no longer uses it (it writes shards,
:mod:`vlm_lake.training.sharded_export`), but it stays the reference the sharded file must
equal byte for byte (the tests and ``benchmarks.scale_export`` compare with it).

The asset writes a staging name (:func:`staging_uri`), checks that file, and only then
:func:`promote` s it over ``training_data.json``: a file that fails its checks is never the
one trainers read.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish, reads
from vlm_lake.tables.contracts import image_columns, image_id_columns
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """Result of an export."""

    uri: str
    records: int
    records_expected: int
    images: int
    bytes_written: int
    source_version: int
    seconds: float
    preview: list[dict[str, object]]


def format_record(text: str, images: list[bytes | None]) -> str:
    """Format one training record (images that are None are left out)."""
    hexes = ", ".join(f'"{img.hex()}"' for img in images if img is not None)
    instruction = json.dumps(text, ensure_ascii=False)
    return f'{{"instruction": {instruction}, "input": [{hexes}], "output": ""}}'


def export_training_json(
    store: ObjectStore,
    multimodal_uri: str,
    out_uri: str,
    *,
    version: int | str | None = "published",
    batch_rows: int = reads.RANGE_ROWS,
) -> ExportReport:
    """Write the training JSON for one version of ``multimodal_lance``.

    Args:
        store: Object store used for the output and for Lance storage options.
        multimodal_uri: ``multimodal.lance`` URI.
        out_uri: Where ``training_data.json`` goes.
        version: Version or tag of the multimodal dataset (default: the published one);
            None for the latest.
        batch_rows: Documents per read (bounds memory; see ``reads.read_ranges``).

    Returns:
        An :class:`ExportReport`.
    """
    ds = publish.open_version(multimodal_uri, store.storage_options(multimodal_uri), version)
    num_slots = len(image_id_columns(ds.schema))
    columns = ["text", *image_columns(num_slots)]
    progress = Progress(log, "records")
    images = 0
    written = 0
    preview: list[dict[str, object]] = []
    with store.open_atomic_writer(out_uri) as out:
        out.write(b"[")
        first = True
        for batch in reads.read_ranges(ds, columns, batch_rows):
            texts = batch.column("text").to_pylist()
            cols = [batch.column(c).to_pylist() for c in columns[1:]]
            for i, text in enumerate(texts):
                imgs = [c[i] for c in cols]
                chunk = ("\n" if first else ",\n") + format_record(text, imgs)
                data = chunk.encode("utf-8")
                out.write(data)
                written += len(data)
                first = False
                present = sum(img is not None for img in imgs)
                images += present
                if len(preview) < 5:
                    preview.append(_preview(text, imgs))
                progress.update(1, len(data))
        out.write(b"\n]\n")
        written += 4
    progress.done()
    return ExportReport(
        out_uri,
        progress.count,
        ds.count_rows(),
        images,
        written,
        ds.version,
        progress.seconds,
        preview,
    )


def _preview(text: str, images: list[bytes | None]) -> dict[str, object]:
    """A short stand-in for one record: the text and the start of each image's hex."""
    hexes = [f"{img[:8].hex()}… ({len(img)} bytes)" for img in images if img is not None]
    return {"instruction": text, "input": "; ".join(hexes), "output": ""}


def preview_records(
    store: ObjectStore, multimodal_uri: str, version: int, rows: int = 5
) -> list[dict[str, object]]:
    """Short stand-ins for the first ``rows`` records of one version (for asset metadata)."""
    ds = publish.open_version(multimodal_uri, store.storage_options(multimodal_uri), version)
    columns = ["text", *image_columns(len(image_id_columns(ds.schema)))]
    table = ds.to_table(columns=columns, limit=rows)
    slots = [table.column(c).to_pylist() for c in columns[1:]]
    return [
        _preview(text, [slot[i] for slot in slots])
        for i, text in enumerate(table.column("text").to_pylist())
    ]


def staging_uri(out_uri: str) -> str:
    """Where the candidate training file is written before its checks pass."""
    return out_uri + ".candidate"


def promote(store: ObjectStore, src_uri: str, dst_uri: str) -> None:
    """Move a checked candidate file over the published name.

    Locally this is an atomic ``os.replace``. On S3 it is a server-side copy (multipart for
    large objects), after which the candidate is deleted; readers see either the old or the
    new object, never a partial one.
    """
    src_uri, dst_uri = uris.normalize(src_uri), uris.normalize(dst_uri)
    if uris.is_remote(src_uri) != uris.is_remote(dst_uri):
        raise ValueError(
            f"src_uri={src_uri!r} and dst_uri={dst_uri!r} must both be local or both remote"
        )
    if not uris.is_remote(src_uri):
        Path(dst_uri).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src_uri, dst_uri)
        return
    src_bucket, src_key = uris.split_bucket_key(src_uri)
    dst_bucket, dst_key = uris.split_bucket_key(dst_uri)
    store.client.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)
    store.client.delete_object(Bucket=src_bucket, Key=src_key)
    log.info("published %s", dst_uri)
