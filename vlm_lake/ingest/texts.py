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
from typing import Any

import pyarrow as pa

from vlm_lake.curation.text_signals import text_batch
from vlm_lake.errors import InvalidDocumentError, SourceNotFoundError
from vlm_lake.ingest.changes import commit_changes
from vlm_lake.ingest.quarantine import RejectedDocument, write_rejections
from vlm_lake.ingest.text_options import TextIngestOptions, TextIngestReport
from vlm_lake.ingest.text_published import Published, carry_rows, published_texts
from vlm_lake.ingest.text_records import (
    TextListing,
    TextScan,
    file_records,
    list_text_sources,
    record_slots,
    scan_sources,
)
from vlm_lake.ingest.text_spark import ingest_texts_on_spark
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import (
    REJECTED_DOCUMENTS_SCHEMA,
    image_id_column,
    text_schema,
)
from vlm_lake.tables.layout import TEXTS_LAYOUT
from vlm_lake.util.progress import Progress

log = logging.getLogger(__name__)


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
                yield text_batch(rows, schema)
                rows = []
    if rows:
        yield text_batch(rows, schema)


def _scan(
    store: ObjectStore,
    texts_uri: str,
    options: TextIngestOptions,
    existing: Published | None,
    rejects_uri: str | None,
    listing: TextListing,
) -> TextScan:
    """First pass, rejections saved; a source without one valid document is an error."""
    scan = scan_sources(
        store,
        texts_uri,
        strict=options.on_bad_input == "fail",
        max_slots=options.max_image_slots,
        kept_sources=existing.sources if existing else None,
        listing=listing,
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
    spark: Any = None,
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
        spark: A SparkSession, or a function returning one (called only if the run scans
            and writes on Spark, see ``options.engine``).

    Returns:
        A :class:`TextIngestReport`; the new version is a candidate until it is published.

    Raises:
        SourceNotFoundError: No text files at ``texts_uri``, or no valid document in them.
        InvalidDocumentError: A bad file or record, with ``on_bad_input="fail"``.
        DuplicateKeyError: A docid appears twice, with ``on_bad_input="fail"``.
    """
    options = options or TextIngestOptions()
    storage = store.storage_options(dataset_uri)
    base, existing = published_texts(dataset_uri, storage, options.full_rebuild)
    listing = list_text_sources(store, texts_uri)
    rejects = rejects_uri if record_rejects else None
    if options.use_spark(spark, sum(f.size for f in listing[0])):
        return ingest_texts_on_spark(
            spark() if callable(spark) else spark,
            store,
            texts_uri,
            dataset_uri,
            options,
            base=base,
            existing=existing,
            rejects_uri=rejects,
            listing=listing,
        )
    return _ingest_locally(store, texts_uri, dataset_uri, options, base, existing, rejects, listing)


def _ingest_locally(
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions,
    base: int | None,
    existing: Published | None,
    rejects_uri: str | None,
    listing: TextListing,
) -> TextIngestReport:
    """The local path of :func:`ingest_texts`: two passes in this process, one commit."""
    storage = store.storage_options(dataset_uri)
    progress = Progress(log, "documents")
    scan = _scan(store, texts_uri, options, existing, rejects_uri, listing)
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
    existing: Published | None,
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
        kept = carry_rows(dataset_uri, storage, existing.version, missing, num_slots)
        batches = itertools.chain(batches, kept)
    return batches


def _tracked(batches: Iterator[pa.RecordBatch], written: list[str]) -> Iterator[pa.RecordBatch]:
    """``batches``, recording the docid of every row written into ``written``."""
    for batch in batches:
        written.extend(batch.column("docid").to_pylist())
        yield batch
