"""Ingest JSON / JSON Lines documents into the ``text_lance`` dataset.

A document is an object with a string ``docid``, a non-empty string ``text`` and image
references ``image_id1`` ... ``image_idK`` (any may be absent or null). K, the number of
image columns, is the highest slot any document uses.

Two streaming passes, file by file. The first validates every record, sends bad ones (and
unreadable files) to ``rejected_documents.lance`` with the reason, finds K, and hashes each
good record. Comparing those hashes with the *published* table gives the new and changed
documents; the second pass reads only the files that hold them and upserts them with one
Lance ``merge_insert`` keyed on ``docid``. A run with nothing new commits nothing. Memory
holds one small entry per document (id, hash, location), never the texts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake import lance_io, publish
from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError, SourceNotFoundError
from vlm_lake.lance_layout import TEXTS_LAYOUT, maintain
from vlm_lake.object_store import ObjectInfo, ObjectStore
from vlm_lake.progress import Progress
from vlm_lake.quarantine import (
    REJECTED_DOCUMENTS_SCHEMA,
    RejectedDocument,
    check_on_bad_input,
    write_rejections,
)

log = logging.getLogger(__name__)

TEXT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_SLOT_KEY = re.compile(r"^image_id(\d+)$")

#: Documents with more image slots than this are rejected (a typo like image_id100000
#: would otherwise create that many columns).
MAX_IMAGE_SLOTS = 64

#: Columns after the image ids: where the document came from and a hash of its content.
PROVENANCE_COLUMNS = ("source_uri", "record_sha256")


def text_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``text_lance`` with ``num_slots`` image-id columns."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(f"image_id{k}", pa.string()) for k in range(1, num_slots + 1)]
        + [
            pa.field("source_uri", pa.string(), nullable=False),
            pa.field("record_sha256", pa.string(), nullable=False),
        ]
    )


def image_id_columns(schema: pa.Schema) -> list[str]:
    """Return the ``image_idN`` column names of a schema, ordered by N."""
    found = [(int(m.group(1)), f.name) for f in schema if (m := _SLOT_KEY.match(f.name))]
    return [name for _, name in sorted(found)]


@dataclass(frozen=True)
class TextIngestReport:
    """Result of a text ingest.

    Attributes:
        summary: The dataset's latest version after the run (the candidate to check).
        committed: Whether this run wrote a new version (False when nothing changed).
        full_rebuild: Whether the table was rewritten rather than merged.
        base_version: The published version the changes were computed against, if any.
        files: Text files read.
        documents: Valid documents in the source.
        num_slots: K, the number of image-id columns.
        inserted: Rows added.
        updated: Rows replaced because the document changed.
        unchanged: Valid documents already in the table with the same content.
        deleted: Rows deleted because their document is gone (``delete_missing``).
        missing_from_source: Rows kept although their document is gone.
        rejected: Every current rejection.
        written_ids: The ``docid`` of every row written by this run.
        seconds: Wall time.
    """

    summary: lance_io.DatasetSummary
    committed: bool
    full_rebuild: bool
    base_version: int | None
    files: int
    documents: int
    num_slots: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    missing_from_source: int
    rejected: list[RejectedDocument]
    written_ids: list[str] = field(repr=False)
    seconds: float


@dataclass(frozen=True)
class TextIngestOptions:
    """Knobs and policies of the text ingest.

    Attributes:
        batch_rows: Documents per Arrow batch.
        full_rebuild: Overwrite the table with every document instead of merging.
        on_bad_input: ``quarantine`` (record and go on) or ``fail`` (raise at the first).
        delete_missing: Delete rows whose document is gone from the source (mirror it); by
            default they are kept and counted as ``missing_from_source``.
        max_image_slots: Reject documents that use a higher ``image_idN`` than this.
    """

    batch_rows: int = 4096
    full_rebuild: bool = False
    on_bad_input: str = "quarantine"
    delete_missing: bool = False
    max_image_slots: int = MAX_IMAGE_SLOTS

    def __post_init__(self) -> None:
        check_on_bad_input(self.on_bad_input)
        if self.max_image_slots < 1:
            raise ValueError(f"max_image_slots={self.max_image_slots!r} must be at least 1")


def _file_records(store: ObjectStore, info: ObjectInfo) -> Iterator[tuple[int | None, Any]]:
    """Yield ``(line, record)`` from one file; a bad line yields an InvalidDocumentError."""
    raw = store.read_bytes(info.uri)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield None, InvalidDocumentError(info.uri, f"not UTF-8 text ({exc})")
        return
    lines_format = info.key.lower().endswith(_JSON_LINES_SUFFIXES)
    if not lines_format:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # several JSON values: read it as JSON Lines
                yield (
                    exc.lineno,
                    InvalidDocumentError(
                        info.uri, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
                    ),
                )
                return
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
            yield (
                lineno,
                InvalidDocumentError(
                    info.uri,
                    f"invalid JSON Lines record: {exc.msg} (column {exc.colno})",
                    line=lineno,
                ),
            )


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


def _record_hash(docid: str, text: str, slots: dict[int, str]) -> str:
    payload = json.dumps([docid, text, sorted(slots.items())], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class _Doc:
    """Where the accepted copy of one docid is, and a hash of its content."""

    file: int
    index: int
    line: int | None
    sha256: str


class _Replace(Exception):  # noqa: N818 - control flow inside _scan_sources only
    """A duplicate docid whose later copy replaces the earlier one."""


@dataclass
class _Scan:
    files: list[ObjectInfo]
    docs: dict[str, _Doc]
    rejected: list[RejectedDocument]
    num_slots: int


def _check_record(
    record: Any, info: ObjectInfo, line: int | None, index: int, max_slots: int
) -> dict[int, str]:
    slots = _validate(record, info, line, index)
    if not record["docid"].strip():
        raise InvalidDocumentError(
            info.uri,
            f"record #{index} has docid={record['docid']!r}; expected a non-blank string",
            line=line,
        )
    if not record["text"].strip():
        raise InvalidDocumentError(
            info.uri,
            f"record #{index} (docid={record['docid']!r}) has an empty text; "
            "expected a non-empty string",
            line=line,
        )
    if slots and max(slots) > max_slots:
        raise InvalidDocumentError(
            info.uri,
            f"record #{index} (docid={record['docid']!r}) uses image_id{max(slots)}; at most "
            f"{max_slots} image slots are allowed (max_image_slots)",
            line=line,
        )
    return slots


def _scan_sources(
    store: ObjectStore,
    texts_uri: str,
    options: TextIngestOptions,
    kept_sources: dict[str, str] | None = None,
) -> _Scan:
    """First pass: validate, quarantine, de-duplicate, hash; find K.

    Of two records with the same docid, the one from the file the published table took it
    from (``kept_sources``) wins; otherwise the first in key order.
    """
    kept_sources = kept_sources or {}
    files = list(store.list(texts_uri, suffixes=TEXT_SUFFIXES))
    if not files:
        raise SourceNotFoundError(
            f"no text files at texts_uri={texts_uri!r}; expected a JSON array or JSON Lines "
            f"file (suffixes {', '.join(TEXT_SUFFIXES)}) or a prefix holding them"
        )
    strict = options.on_bad_input == "fail"
    docs: dict[str, _Doc] = {}
    rejected: list[RejectedDocument] = []
    num_slots = 1
    for file_no, info in enumerate(files):
        index = -1
        for line, record in _file_records(store, info):
            if isinstance(record, InvalidDocumentError):
                if strict:
                    raise record
                rejected.append(RejectedDocument(info.uri, record.line, None, None, record.problem))
                continue
            index += 1
            try:
                slots = _check_record(record, info, line, index, options.max_image_slots)
                docid = record["docid"]
                if docid in docs:
                    first = docs[docid]
                    where = files[first.file].uri + (
                        f" line {first.line}" if first.line else f" record #{first.index}"
                    )
                    first_uri = files[first.file].uri
                    if not strict and kept_sources.get(docid) == info.uri != first_uri:
                        rejected.append(
                            RejectedDocument(
                                first_uri,
                                first.line,
                                first.index,
                                docid,
                                f"docid {docid!r} appears twice: in {where} and {info.uri!r}; "
                                f"the copy from {info.uri!r}, already in the lake, is kept",
                            )
                        )
                        del docs[docid]
                        raise _Replace
                    raise DuplicateKeyError(
                        f"docid {docid!r} appears twice: in {where} and {info.uri!r}; "
                        "docid must be unique across all text files (the first one is kept)"
                    )
            except _Replace:
                pass
            except (InvalidDocumentError, DuplicateKeyError) as exc:
                if strict:
                    raise
                reason = exc.problem if isinstance(exc, InvalidDocumentError) else str(exc)
                docid_text = record.get("docid") if isinstance(record, dict) else None
                rejected.append(
                    RejectedDocument(
                        info.uri,
                        line,
                        index,
                        None if docid_text is None else str(docid_text),
                        reason,
                    )
                )
                continue
            docs[docid] = _Doc(file_no, index, line, _record_hash(docid, record["text"], slots))
            num_slots = max(num_slots, *slots.keys(), 1)
    return _Scan(files, docs, rejected, num_slots)


def iter_text_batches(
    store: ObjectStore,
    scan: _Scan,
    wanted: set[str] | None,
    num_slots: int,
    batch_rows: int,
    progress: Progress,
) -> Iterator[pa.RecordBatch]:
    """Second pass: yield the accepted documents in ``wanted`` (all if None) as batches.

    Only files holding a wanted document are read again.
    """
    schema = text_schema(num_slots)
    files = sorted({d.file for docid, d in scan.docs.items() if wanted is None or docid in wanted})
    rows: list[dict[str, Any]] = []
    for file_no in files:
        info = scan.files[file_no]
        index = -1
        for _line, record in _file_records(store, info):
            if isinstance(record, InvalidDocumentError):
                continue
            index += 1
            if not isinstance(record, dict) or not isinstance(record.get("docid"), str):
                continue
            docid = record["docid"]
            accepted = scan.docs.get(docid)
            if accepted is None or (accepted.file, accepted.index) != (file_no, index):
                continue  # rejected, or a later duplicate
            if wanted is not None and docid not in wanted:
                continue
            slots = {int(m.group(1)): v for k, v in record.items() if (m := _SLOT_KEY.match(k))}
            row = {"docid": docid, "text": record["text"]}
            row.update({f"image_id{k}": slots.get(k) for k in range(1, num_slots + 1)})
            row.update({"source_uri": info.uri, "record_sha256": accepted.sha256})
            rows.append(row)
            progress.update(1, len(record["text"]))
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _existing_texts(
    dataset_uri: str, storage: dict[str, str], version: int
) -> tuple[dict[str, str], int, dict[str, str]] | None:
    """``docid -> record_sha256``, K and ``docid -> source_uri`` of one version.

    None if the version's schema is older than this code's.
    """
    ds = lance_io.open_dataset(dataset_uri, storage, version)
    num_slots = len(image_id_columns(ds.schema))
    if not ds.schema.equals(text_schema(num_slots)):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            version,
        )
        return None
    hashes = lance_io.column_map(ds, "docid", "record_sha256")
    sources = lance_io.column_map(ds, "docid", "source_uri")
    return hashes, num_slots, sources


def _carry_rows(
    dataset_uri: str, storage: dict[str, str], version: int, docids: list[str], num_slots: int
) -> Iterator[pa.RecordBatch]:
    """Rows of ``docids`` from one version, widened to ``num_slots`` image columns."""
    ds = lance_io.open_dataset(dataset_uri, storage, version)
    schema = text_schema(num_slots)
    for start in range(0, len(docids), 1024):
        chunk = docids[start : start + 1024]
        table = ds.to_table(filter=f"docid IN ({lance_io.sql_string_list(chunk)})")
        columns = [
            table.column(f.name) if f.name in table.schema.names else pa.nulls(len(table), f.type)
            for f in schema
        ]
        yield from pa.Table.from_arrays(columns, schema=schema).to_batches()


def ingest_texts(
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions | None = None,
    *,
    rejects_uri: str | None = None,
) -> TextIngestReport:
    """Bring the Lance dataset at ``dataset_uri`` up to date with the documents at ``texts_uri``.

    Incremental by default: only new or changed documents are written, merged by ``docid``
    in one commit. Without a published version, with ``full_rebuild``, when K grows or the
    table's schema is older than this code, the table is overwritten (one commit).

    Args:
        store: Object store to read from and whose settings Lance uses.
        texts_uri: A JSON / JSON Lines file, or a prefix/folder of them.
        dataset_uri: Where ``texts.lance`` goes.
        options: Knobs and policies.
        rejects_uri: Where ``rejected_documents.lance`` goes; None keeps rejections only
            in the report.

    Returns:
        A :class:`TextIngestReport`; the new version is a candidate until it is published.

    Raises:
        SourceNotFoundError: No text files at ``texts_uri``, or no valid document in them.
        InvalidDocumentError: A bad file or record, with ``on_bad_input="fail"``.
        DuplicateKeyError: A docid appears twice, with ``on_bad_input="fail"``.
    """
    options = options or TextIngestOptions()
    storage = store.storage_options(dataset_uri)
    progress = Progress(log, "documents")
    base = None if options.full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    existing = _existing_texts(dataset_uri, storage, base) if base is not None else None
    scan = _scan_sources(store, texts_uri, options, existing[2] if existing else None)
    if rejects_uri is not None:
        write_rejections(
            rejects_uri,
            REJECTED_DOCUMENTS_SCHEMA,
            scan.rejected,
            store.storage_options(rejects_uri),
        )
    if not scan.docs:
        raise SourceNotFoundError(
            f"no valid document in the {len(scan.files)} text file(s) at texts_uri={texts_uri!r}; "
            f"{len(scan.rejected)} rejected (first: {scan.rejected[0].source_uri!r}: "
            f"{scan.rejected[0].reason})"
        )
    rebuild = existing is None or scan.num_slots > existing[1]
    num_slots = scan.num_slots if existing is None else max(scan.num_slots, existing[1])
    hashes = {} if existing is None else existing[0]
    changed = {docid for docid, d in scan.docs.items() if hashes.get(docid) != d.sha256}
    missing = sorted(set(hashes) - set(scan.docs))
    log.info(
        "texts: %d documents in %d file(s), K=%d, %d new or changed, %d rejected; %s",
        len(scan.docs),
        len(scan.files),
        num_slots,
        len(changed),
        len(scan.rejected),
        "full rebuild" if rebuild else f"merging into published version {base}",
    )
    written: list[str] = []

    def track(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            written.extend(batch.column("docid").to_pylist())
            yield batch

    delete = missing if (options.delete_missing and not rebuild) else []
    stats = lance_io.MergeStats(0, 0, 0)
    if rebuild:
        if existing is not None:
            log.info(
                "K grew from %d to %d image slots: rewriting the table", existing[1], num_slots
            )
        batches = iter_text_batches(store, scan, None, num_slots, options.batch_rows, progress)
        if existing is not None and missing and not options.delete_missing:
            # K grew: rewrite, but keep the rows whose documents left the source, as a merge would.
            assert base is not None
            kept = _carry_rows(dataset_uri, storage, base, missing, num_slots)
            batches = itertools.chain(batches, kept)
        lance_io.write_batches(
            track(batches),
            dataset_uri,
            text_schema(num_slots),
            storage,
            mode="overwrite",
            max_rows_per_file=TEXTS_LAYOUT.rows_per_fragment,
            commit_message=f"ingest texts from {texts_uri} (full rebuild)",
        )
        dropped = len(missing) if existing is not None and options.delete_missing else 0
        stats = lance_io.MergeStats(len(written), 0, dropped)
    elif changed or delete:
        batches = iter_text_batches(store, scan, changed, num_slots, options.batch_rows, progress)
        _, stats = lance_io.merge_batches(
            track(batches),
            dataset_uri,
            text_schema(num_slots),
            storage,
            on="docid",
            delete_keys=delete,
        )
    committed = rebuild or bool(changed) or bool(delete)
    if committed:  # index (and, by policy, compaction) on top: the latest is the candidate
        maintain(dataset_uri, storage, TEXTS_LAYOUT)
    ds = lance_io.open_dataset(dataset_uri, storage)
    progress.done()
    return TextIngestReport(
        summary=lance_io.summarize(ds, dataset_uri),
        committed=committed,
        full_rebuild=rebuild,
        base_version=base,
        files=len(scan.files),
        documents=len(scan.docs),
        num_slots=num_slots,
        inserted=stats.inserted,
        updated=stats.updated,
        unchanged=len(scan.docs) - len(changed),
        deleted=stats.deleted,
        missing_from_source=0 if options.delete_missing else len(missing),
        rejected=scan.rejected,
        written_ids=written,
        seconds=progress.seconds,
    )
