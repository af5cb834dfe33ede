"""Ingest JSON / JSON Lines documents into the ``text_lance`` dataset.

A document is an object with a string ``docid``, a string ``text`` and image references
``image_id1`` ... ``image_idK`` (any may be absent or null). K, the number of image columns,
is the highest slot any document uses, found in a first streaming pass; the second pass
writes. Both passes stream file by file, so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vlm_lake import lance_io
from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError, SourceNotFoundError
from vlm_lake.object_store import ObjectInfo, ObjectStore
from vlm_lake.progress import Progress

log = logging.getLogger(__name__)

TEXT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_SLOT_KEY = re.compile(r"^image_id(\d+)$")


def text_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``text_lance`` with ``num_slots`` image-id columns."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(f"image_id{k}", pa.string()) for k in range(1, num_slots + 1)]
    )


def image_id_columns(schema: pa.Schema) -> list[str]:
    """Return the ``image_idN`` column names of a schema, ordered by N."""
    found = [(int(m.group(1)), f.name) for f in schema if (m := _SLOT_KEY.match(f.name))]
    return [name for _, name in sorted(found)]


@dataclass(frozen=True)
class TextIngestReport:
    """Result of a text ingest."""

    summary: lance_io.DatasetSummary
    files: int
    documents: int
    num_slots: int
    seconds: float


def _records(store: ObjectStore, info: ObjectInfo) -> Iterator[tuple[int | None, Any]]:
    """Yield ``(line, record)`` from one JSON array file or JSON Lines file."""
    raw = store.read_bytes(info.uri)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDocumentError(info.uri, f"not UTF-8 text ({exc})") from None
    lines_format = info.key.lower().endswith(_JSON_LINES_SUFFIXES)
    if not lines_format:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # several JSON values: treat as JSON Lines
                lines_format = True
            else:
                raise InvalidDocumentError(
                    info.uri, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
                ) from None
        else:
            if isinstance(doc, list):
                for record in doc:
                    yield None, record
            else:
                yield 1, doc
            return
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocumentError(
                info.uri, f"invalid JSON Lines record: {exc.msg} (column {exc.colno})", line=lineno
            ) from None


def _validate(record: Any, info: ObjectInfo, line: int | None, index: int) -> dict[int, str]:
    """Check one record and return its image references by slot number."""
    where = f"record #{index}"
    if not isinstance(record, dict):
        raise InvalidDocumentError(
            info.uri, f"{where} is a {type(record).__name__}, expected a JSON object", line=line
        )
    for key in ("docid", "text"):
        if key not in record or record[key] is None:
            raise InvalidDocumentError(
                info.uri,
                f"{where} has no {key!r}; every document needs 'docid' and 'text' "
                f"(keys present: {sorted(record)})",
                line=line,
            )
        if not isinstance(record[key], str):
            raise InvalidDocumentError(
                info.uri,
                f"{where} has {key}={record[key]!r} of type "
                f"{type(record[key]).__name__}; expected a string",
                line=line,
            )
    slots: dict[int, str] = {}
    for key, value in record.items():
        m = _SLOT_KEY.match(key)
        if not m or value is None:
            continue
        if not isinstance(value, str):
            raise InvalidDocumentError(
                info.uri,
                f"{where} (docid={record['docid']!r}) has {key}={value!r} of type "
                f"{type(value).__name__}; expected a string image id",
                line=line,
            )
        slot = int(m.group(1))
        if slot < 1:
            raise InvalidDocumentError(
                info.uri, f"{where} has key {key!r}; image slots start at image_id1", line=line
            )
        slots[slot] = value
    return slots


def _scan(store: ObjectStore, texts_uri: str) -> tuple[list[ObjectInfo], int, int]:
    """First pass: validate every record, check docids are unique, find K."""
    files = list(store.list(texts_uri, suffixes=TEXT_SUFFIXES))
    if not files:
        raise SourceNotFoundError(
            f"no text files at texts_uri={texts_uri!r}; expected a JSON array or JSON Lines "
            f"file (suffixes {', '.join(TEXT_SUFFIXES)}) or a prefix holding them"
        )
    seen: dict[str, str] = {}
    num_slots = 0
    for info in files:
        for index, (line, record) in enumerate(_records(store, info)):
            slots = _validate(record, info, line, index)
            docid = record["docid"]
            if docid in seen:
                raise DuplicateKeyError(
                    f"docid {docid!r} appears twice: in {seen[docid]!r} and {info.uri!r}; "
                    "docid must be unique across all text files"
                )
            seen[docid] = info.uri
            num_slots = max(num_slots, *slots.keys(), 0)
    return files, len(seen), max(num_slots, 1)


def iter_text_batches(
    store: ObjectStore, files: list[ObjectInfo], num_slots: int, batch_rows: int, progress: Progress
) -> Iterator[pa.RecordBatch]:
    """Second pass: yield validated documents as record batches of :func:`text_schema`."""
    schema = text_schema(num_slots)
    rows: list[dict[str, Any]] = []
    for info in files:
        for index, (line, record) in enumerate(_records(store, info)):
            slots = _validate(record, info, line, index)
            row = {"docid": record["docid"], "text": record["text"]}
            row.update({f"image_id{k}": slots.get(k) for k in range(1, num_slots + 1)})
            rows.append(row)
            progress.update(1, len(record["text"]))
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def ingest_texts(
    store: ObjectStore, texts_uri: str, dataset_uri: str, *, batch_rows: int = 4096
) -> TextIngestReport:
    """Write every document under ``texts_uri`` to the Lance dataset at ``dataset_uri``.

    Args:
        store: Object store to read from and whose settings Lance uses.
        texts_uri: A JSON / JSON Lines file, or a prefix/folder of them.
        dataset_uri: Where ``texts.lance`` goes.
        batch_rows: Documents per Arrow batch.

    Returns:
        A :class:`TextIngestReport`.

    Raises:
        InvalidDocumentError: A file is not valid JSON or a record breaks the contract.
        DuplicateKeyError: A docid appears twice.
        SourceNotFoundError: No text files at ``texts_uri``.
    """
    progress = Progress(log, "documents")
    files, count, num_slots = _scan(store, texts_uri)
    log.info(
        "ingesting %d documents (K=%d image slots) from %d file(s) into %s",
        count,
        num_slots,
        len(files),
        dataset_uri,
    )
    ds = lance_io.write_batches(
        iter_text_batches(store, files, num_slots, batch_rows, progress),
        dataset_uri,
        text_schema(num_slots),
        store.storage_options(dataset_uri),
        mode="overwrite",
        commit_message=f"ingest texts from {texts_uri}",
    )
    progress.done()
    return TextIngestReport(
        lance_io.summarize(ds, dataset_uri), len(files), count, num_slots, progress.seconds
    )
