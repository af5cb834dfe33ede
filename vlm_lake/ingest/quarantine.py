"""Quarantine: bad input becomes a row with its reason, never a silent drop.

Ingest keeps every good image and document and records each rejected one in a small Lance
dataset next to the lake (``rejected_images.lance``, ``rejected_documents.lance``). The
table always holds the *current* rejections: an object that is fixed disappears from it on
the next run, one that stays bad stays listed. It is rewritten only when that set changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.tables import lance_io

log = logging.getLogger(__name__)

#: What ingest does with bad input: record it and go on, or stop at the first one.
ON_BAD_INPUT = ("quarantine", "fail")


def check_on_bad_input(value: str) -> str:
    """Validate an ``on_bad_input`` setting and return it."""
    if value not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input={value!r} is not allowed; use one of {ON_BAD_INPUT}")
    return value


@dataclass(frozen=True)
class RejectedImage:
    """One image object that was not ingested.

    Attributes:
        source_uri: The object.
        image_id: Its file stem (the id it would have had).
        etag: The object's ETag when it was rejected; the same ETag is not downloaded again.
        size_bytes: Object size.
        stage: ``listing`` (name), ``duplicate`` (stem clash) or ``decode`` (bytes).
        reason: What is wrong and what was expected.
    """

    source_uri: str
    image_id: str
    etag: str
    size_bytes: int
    stage: str
    reason: str


@dataclass(frozen=True)
class RejectedDocument:
    """One document (or whole text file) that was not ingested.

    Attributes:
        source_uri: The text file.
        stage: ``listing`` (the file's name is not a text source's), ``read`` (not UTF-8),
            ``parse`` (not JSON / JSON Lines), ``record`` (the record breaks the contract)
            or ``duplicate`` (its docid is taken).
        line: Line of the record or of the syntax error (None for a JSON array element).
        record_index: Position of the record in its file (None when the file is unreadable).
        docid: The record's ``docid`` as text, if it had one.
        reason: What is wrong and what was expected.
    """

    source_uri: str
    stage: str
    line: int | None
    record_index: int | None
    docid: str | None
    reason: str


def read_rejected_images(
    uri: str, storage_options: dict[str, str] | None = None
) -> list[RejectedImage]:
    """Return the current image rejections at ``uri`` (empty if there is no table yet)."""
    try:
        rows = lance_io.open_dataset(uri, storage_options).to_table().to_pylist()
    except DatasetNotFoundError:
        return []
    return [RejectedImage(**row) for row in rows]


def write_rejections(
    uri: str,
    schema: pa.Schema,
    rejections: Sequence[RejectedImage] | Sequence[RejectedDocument],
    storage_options: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Replace the rejections table at ``uri`` if its content changed.

    Args:
        uri: ``rejected_images.lance`` or ``rejected_documents.lance``.
        schema: ``REJECTED_IMAGES_SCHEMA`` or ``REJECTED_DOCUMENTS_SCHEMA`` (from
            :mod:`vlm_lake.tables.contracts`).
        rejections: The complete current set, in source order.
        storage_options: Lance storage options.

    Returns:
        ``(version, committed)``: the table's version and whether this call wrote it.
    """
    table = pa.Table.from_pylist([asdict(r) for r in rejections], schema=schema)
    try:
        existing = lance_io.open_dataset(uri, storage_options)
    except DatasetNotFoundError:
        existing = None
    if existing is not None and existing.schema.equals(schema):
        if existing.to_table().equals(table):
            return existing.version, False
    ds = lance_io.write_batches(
        table.to_batches() or [pa.RecordBatch.from_pylist([], schema=schema)],
        uri,
        schema,
        storage_options,
        mode="overwrite",
        commit_message=f"{len(rejections)} current rejections",
    )
    if rejections:
        log.warning("%d input(s) quarantined in %s", len(rejections), uri)
    return ds.version, True
