"""Ingest JSON / JSON Lines documents into the ``text_lance`` dataset.

Two streaming passes, file by file. The first (:func:`~vlm_lake.ingest.text_records.
scan_sources`) validates every record, sends bad ones (and unreadable files) to
``rejected_documents.lance`` with the reason, finds K and hashes each good record.
Comparing those hashes with the *published* table gives the new and changed documents; the
second pass reads only the files that hold them and upserts them with one Lance
``merge_insert`` keyed on ``docid``. A run with nothing new commits nothing. If a document
uses more image slots than the table has (K grows), the table is rewritten once with the
new K, keeping every row.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vlm_lake.errors import InvalidDocumentError, SourceNotFoundError
from vlm_lake.ingest.changes import IngestReport, commit_changes
from vlm_lake.ingest.quarantine import RejectedDocument, check_on_bad_input, write_rejections
from vlm_lake.ingest.text_records import TextScan, file_records, record_slots, scan_sources
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import (
    MAX_IMAGE_SLOTS,
    REJECTED_DOCUMENTS_SCHEMA,
    image_id_column,
    image_id_columns,
    text_schema,
)
from vlm_lake.tables.layout import TEXTS_LAYOUT
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextIngestReport(IngestReport):
    """Result of a text ingest (see :class:`~vlm_lake.ingest.changes.IngestReport`).

    Attributes:
        files: Text files read.
        documents: Valid documents in the source.
        num_slots: K, the number of image-id columns.
    """

    files: int = 0
    documents: int = 0
    num_slots: int = 1


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


def iter_text_batches(
    store: ObjectStore,
    scan: TextScan,
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
        for _line, record in file_records(store, info):
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
            slots = record_slots(record)
            row = {"docid": docid, "text": record["text"]}
            row.update({image_id_column(k): slots.get(k) for k in range(1, num_slots + 1)})
            row.update({"source_uri": info.uri, "record_sha256": accepted.sha256})
            rows.append(row)
            progress.update(1, len(record["text"]))
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


@dataclass(frozen=True)
class _Published:
    """What the published table holds: hashes and sources by docid, and K."""

    version: int
    hashes: dict[str, str]
    sources: dict[str, str]
    num_slots: int


def _published_texts(
    dataset_uri: str, storage: dict[str, str], full_rebuild: bool
) -> tuple[int | None, _Published | None]:
    """The published version to merge into and what it holds.

    ``(version, None)`` or ``(None, None)`` mean a full rebuild: nothing published, a
    rebuild was asked for, or the published schema is older than this code's.
    """
    base = None if full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    if base is None:
        return None, None
    ds = lance_io.open_dataset(dataset_uri, storage, base)
    num_slots = len(image_id_columns(ds.schema))
    if not ds.schema.equals(text_schema(num_slots)):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            base,
        )
        return base, None
    hashes = lance_io.column_map(ds, "docid", "record_sha256")
    sources = lance_io.column_map(ds, "docid", "source_uri")
    return base, _Published(base, hashes, sources, num_slots)


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


def _scan(
    store: ObjectStore,
    texts_uri: str,
    options: TextIngestOptions,
    existing: _Published | None,
    rejects_uri: str | None,
) -> TextScan:
    """First pass, rejections saved; a source without one valid document is an error."""
    scan = scan_sources(
        store,
        texts_uri,
        strict=options.on_bad_input == "fail",
        max_slots=options.max_image_slots,
        kept_sources=existing.sources if existing else None,
    )
    if rejects_uri is not None:
        storage = store.storage_options(rejects_uri)
        write_rejections(rejects_uri, REJECTED_DOCUMENTS_SCHEMA, scan.rejected, storage)
    if not scan.docs:
        first = scan.rejected[0]
        raise SourceNotFoundError(
            f"no valid document in the {len(scan.files)} text file(s) at texts_uri={texts_uri!r}; "
            f"{len(scan.rejected)} rejected (first: {first.source_uri!r}: {first.reason})"
        )
    return scan


def quarantine_texts(
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions | None = None,
    *,
    rejects_uri: str,
) -> list[RejectedDocument]:
    """Validate the text source and record its rejections, without writing ``text_lance``.

    The first pass of :func:`ingest_texts` alone: every file is read and every record
    checked; of two copies of a docid, the one the published table took is kept (read
    only). ``rejected_documents.lance`` is rewritten if the set changed.

    Returns:
        The current rejections, in source order.

    Raises:
        SourceNotFoundError: No text files at ``texts_uri``.
        InvalidDocumentError: A bad file or record, with ``on_bad_input="fail"``.
        DuplicateKeyError: A docid appears twice, with ``on_bad_input="fail"``.
    """
    options = options or TextIngestOptions()
    storage = store.storage_options(dataset_uri)
    pub = None if options.full_rebuild else publish.published(dataset_uri, storage)
    kept = None
    if pub is not None:
        ds = lance_io.open_dataset(dataset_uri, storage, pub.version)
        if "source_uri" in ds.schema.names:
            kept = lance_io.column_map(ds, "docid", "source_uri")
    scan = scan_sources(
        store,
        texts_uri,
        strict=options.on_bad_input == "fail",
        max_slots=options.max_image_slots,
        kept_sources=kept,
    )
    write_rejections(
        rejects_uri, REJECTED_DOCUMENTS_SCHEMA, scan.rejected, store.storage_options(rejects_uri)
    )
    return scan.rejected


def ingest_texts(
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions | None = None,
    *,
    rejects_uri: str | None = None,
    record_rejects: bool = True,
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
        record_rejects: Rewrite ``rejects_uri`` with this run's rejections; False leaves
            it as it is (a run that materializes ``text_lance`` without its quarantine).

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
    base, existing = _published_texts(dataset_uri, storage, options.full_rebuild)
    scan = _scan(store, texts_uri, options, existing, rejects_uri if record_rejects else None)
    rebuild = existing is None or scan.num_slots > existing.num_slots
    num_slots = max(scan.num_slots, existing.num_slots if existing else 0)
    hashes = existing.hashes if existing else {}
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
    batches = _rows_to_write(
        store, scan, options, existing, dataset_uri, storage, rebuild, changed, missing, progress
    )
    result = commit_changes(
        _tracked(batches, written),
        uri=dataset_uri,
        storage=storage,
        schema=text_schema(num_slots),
        layout=TEXTS_LAYOUT,
        rebuild=rebuild,
        delete_keys=missing if (options.delete_missing and not rebuild) else [],
        message=f"ingest texts from {texts_uri} (full rebuild)",
    )
    deleted = result.stats.deleted
    if rebuild and existing is not None and options.delete_missing:
        deleted = len(missing)  # K grew: the rewrite left the missing rows out
    progress.done()
    return TextIngestReport(
        summary=lance_io.summarize(lance_io.open_dataset(dataset_uri, storage), dataset_uri),
        committed=result.committed,
        full_rebuild=rebuild,
        base_version=base,
        inserted=result.stats.inserted,
        updated=result.stats.updated,
        unchanged=len(scan.docs) - len(changed),
        deleted=deleted,
        missing_from_source=0 if options.delete_missing else len(missing),
        rejected=scan.rejected,
        written_ids=written,
        seconds=progress.seconds,
        files=len(scan.files),
        documents=len(scan.docs),
        num_slots=num_slots,
    )


def _rows_to_write(
    store: ObjectStore,
    scan: TextScan,
    options: TextIngestOptions,
    existing: _Published | None,
    dataset_uri: str,
    storage: dict[str, str],
    rebuild: bool,
    changed: set[str],
    missing: list[str],
    progress: Progress,
) -> Iterator[pa.RecordBatch]:
    """The second pass: every document for a rebuild, else the new and changed ones."""
    num_slots = max(scan.num_slots, existing.num_slots if existing else 0)
    if not rebuild:
        return iter_text_batches(store, scan, changed, num_slots, options.batch_rows, progress)
    if existing is not None:
        log.info(
            "K grew from %d to %d image slots: rewriting the table", existing.num_slots, num_slots
        )
    batches = iter_text_batches(store, scan, None, num_slots, options.batch_rows, progress)
    if existing is not None and missing and not options.delete_missing:
        # K grew: rewrite, but keep the rows whose documents left the source, as a merge would.
        kept = _carry_rows(dataset_uri, storage, existing.version, missing, num_slots)
        batches = itertools.chain(batches, kept)
    return batches


def _tracked(batches: Iterator[pa.RecordBatch], written: list[str]) -> Iterator[pa.RecordBatch]:
    """``batches``, recording the docid of every row written into ``written``."""
    for batch in batches:
        written.extend(batch.column("docid").to_pylist())
        yield batch
