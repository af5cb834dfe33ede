"""Text ingest on Spark: the same rules as the local path, with no per-document dict.

1. **Scan** (Spark tasks, :class:`~vlm_lake.ingest.text_tasks.ScanTextsTask`): every unit
   (a file, or a byte range of a large JSON Lines file) is validated and hashed; one small
   row per record goes to a staging Lance table beside ``texts.lance``.
2. **Plan** (Spark SQL over the staging table and the published table): file-wide line and
   record numbers; of two copies of a docid the one the published table took is kept, else
   the first in key order; K; the new and changed documents; the missing ones. Only the
   rejections (bad input), counts, and the docids whose rows are replaced or deleted reach
   the driver.
3. **Write** (Spark tasks, :class:`~vlm_lake.ingest.text_tasks.WriteTextsTask`): the units
   holding a document to write are read again and the documents written as fragments;
   the driver checks the row count and commits once (an overwrite for a rebuild, else an
   ``Update`` replacing the changed rows), as the image ingest does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vlm_lake.errors import SourceNotFoundError
from vlm_lake.ingest.quarantine import write_rejections
from vlm_lake.ingest.text_options import TextIngestOptions, TextIngestReport
from vlm_lake.ingest.text_published import Published, carry_rows
from vlm_lake.ingest.text_records import TextListing, misnamed_rejections
from vlm_lake.ingest.text_spark_plan import TextPlan, scan_on_spark
from vlm_lake.ingest.text_tasks import WriteTextsTask
from vlm_lake.ingest.text_units import TextUnit, plan_text_units
from vlm_lake.spark.fragment_job import FragmentSink, run_fragment_job
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import fragments, lance_io
from vlm_lake.tables.contracts import REJECTED_DOCUMENTS_SCHEMA, text_schema
from vlm_lake.tables.layout import TEXTS_LAYOUT, maintain

log = logging.getLogger(__name__)


def write_on_spark(
    spark: Any,
    store: ObjectStore,
    units: list[TextUnit],
    wanted: Any,
    count: int,
    *,
    uri: str,
    num_slots: int,
    batch_rows: int,
    rows_per_file: int,
) -> list[str]:
    """Write the ``wanted`` records (``unit, local_index, sha256``) as fragments of ``uri``.

    Returns:
        The fragments' metadata (uncommitted).

    Raises:
        RuntimeError: The tasks wrote another number of rows than ``count``.
    """
    if count == 0:
        return []
    storage = store.storage_options(uri)
    task = WriteTextsTask(
        settings=store.settings,
        units=units,
        num_slots=num_slots,
        batch_rows=batch_rows,
        sink=FragmentSink(uri, text_schema(num_slots), storage, rows_per_file),
    )
    touched = wanted.select("unit").distinct().count()
    parts = max(1, min(touched, len(units)))
    frame = wanted.select("unit", "local_index", "sha256").repartitionByRange(parts, "unit")
    written = run_fragment_job(frame, task)
    written.check_rows(count, "documents to write")
    log.info("texts: wrote %d documents in %d Spark tasks", count, parts)
    return written.fragments


def _published_frame(spark: Any, uri: str, storage: dict[str, str], existing: Any) -> Any:
    """``docid, record_sha256, source_uri`` of the published table (empty without one)."""
    from vlm_lake.spark.lance_source import read_lance

    if existing is None:
        return spark.createDataFrame([], "docid string, record_sha256 string, source_uri string")
    return read_lance(
        spark,
        uri,
        storage_options=storage,
        columns=["docid", "record_sha256", "source_uri"],
        version=existing.version,
    )


def ingest_texts_on_spark(
    spark: Any,
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions,
    *,
    base: int | None,
    existing: Published | None,
    rejects_uri: str | None,
    listing: TextListing,
) -> TextIngestReport:
    """:func:`~vlm_lake.ingest.texts.ingest_texts` with the scan, plan and write on Spark.

    Same arguments, rules and report as the local path (``listing`` is what
    :func:`~vlm_lake.ingest.text_records.list_text_sources` returned), except that
    ``written_ids`` is empty (the ids stay in the executors; the counts are in the report).
    """
    started = time.perf_counter()
    strict = options.on_bad_input == "fail"
    files, misnamed = listing
    rejected_names = misnamed_rejections(misnamed, strict)
    units = plan_text_units(files, options.split_bytes)
    storage = store.storage_options(dataset_uri)
    published = _published_frame(spark, dataset_uri, storage, existing)
    log.info("texts: %d file(s) in %d Spark scan tasks", len(files), len(units))
    plan = scan_on_spark(
        spark,
        store,
        units,
        dataset_uri,
        max_slots=options.max_image_slots,
        published=published,
        misnamed=rejected_names,
        strict=strict,
    )
    try:
        return _write_plan(
            spark,
            store,
            texts_uri,
            dataset_uri,
            options,
            plan,
            units,
            published,
            base,
            existing,
            rejects_uri,
            started,
        )
    finally:
        plan.release()


def _write_plan(
    spark: Any,
    store: ObjectStore,
    texts_uri: str,
    dataset_uri: str,
    options: TextIngestOptions,
    plan: TextPlan,
    units: list[TextUnit],
    published: Any,
    base: int | None,
    existing: Published | None,
    rejects_uri: str | None,
    started: float,
) -> TextIngestReport:
    """Write the new and changed documents, commit once; the report."""
    storage = store.storage_options(dataset_uri)
    _record_rejections(store, texts_uri, plan, rejects_uri)
    rebuild = existing is None or plan.num_slots > existing.num_slots
    num_slots = max(plan.num_slots, existing.num_slots if existing else 0)
    wanted = plan.winners
    if not rebuild:
        wanted = wanted.where("old_sha256 IS NULL OR old_sha256 != sha256")
    count = wanted.count()
    replaced = [] if rebuild else _docids(wanted.where("old_sha256 IS NOT NULL"))
    missing = published.join(plan.winners.select("docid"), "docid", "left_anti")
    n_missing = missing.count()
    keep_missing = rebuild and existing is not None and n_missing and not options.delete_missing
    delete_keys = _docids(missing) if options.delete_missing and not rebuild else []
    log.info(
        "texts: %d documents, K=%d, %d new or changed, %d rejected; %s",
        plan.documents,
        num_slots,
        count,
        len(plan.rejected),
        "full rebuild" if rebuild else f"merging into published version {base}",
    )
    schema = text_schema(num_slots)
    written = write_on_spark(
        spark,
        store,
        units,
        wanted,
        count,
        uri=dataset_uri,
        num_slots=num_slots,
        batch_rows=options.batch_rows,
        rows_per_file=TEXTS_LAYOUT.rows_per_fragment,
    )
    carried = 0
    if keep_missing:  # K grew: rewrite, but keep the rows whose documents left the source
        assert existing is not None
        docids = _docids(missing)
        rows = carry_rows(dataset_uri, storage, existing.version, docids, num_slots)
        written += fragments.write_fragment_files(rows, dataset_uri, schema, storage)
        carried = len(docids)
    remove = None if rebuild else set(replaced) | set(delete_keys)
    committed = _commit(dataset_uri, storage, schema, written, remove)
    deleted = len(delete_keys) or (
        n_missing if rebuild and existing and options.delete_missing else 0
    )
    return TextIngestReport(
        summary=lance_io.summarize(lance_io.open_dataset(dataset_uri, storage), dataset_uri),
        committed=committed,
        full_rebuild=rebuild,
        base_version=base,
        inserted=count + carried - len(replaced),
        updated=len(replaced),
        unchanged=plan.documents - count,
        deleted=deleted,
        missing_from_source=0 if options.delete_missing else n_missing,
        rejected=plan.rejected,
        written_ids=[],
        seconds=time.perf_counter() - started,
        files=len({u.file_no for u in units}),
        documents=plan.documents,
        num_slots=num_slots,
        spark_tasks=plan.tasks,
    )


def _record_rejections(
    store: ObjectStore, texts_uri: str, plan: TextPlan, rejects_uri: str | None
) -> None:
    """Save the rejections; a source without one valid document is an error.

    Raises:
        SourceNotFoundError: No valid document in the source.
    """
    if rejects_uri is not None:
        reject_storage = store.storage_options(rejects_uri)
        write_rejections(rejects_uri, REJECTED_DOCUMENTS_SCHEMA, plan.rejected, reject_storage)
    if plan.documents == 0:
        first = plan.rejected[0]
        raise SourceNotFoundError(
            f"no valid document in the text file(s) at texts_uri={texts_uri!r}; "
            f"{len(plan.rejected)} rejected (first: {first.source_uri!r}: {first.reason})"
        )


def _commit(
    uri: str,
    storage: dict[str, str],
    schema: Any,
    written: list[str],
    remove: set[str] | None,
) -> bool:
    """One commit (an overwrite when ``remove`` is None); False when there is nothing to do."""
    if remove is not None and not written and not remove:
        return False
    fragments.commit_job(uri, schema, storage, written, key="docid", remove=remove)
    maintain(uri, storage, TEXTS_LAYOUT)
    return True


def _docids(frame: Any) -> list[str]:
    """The docids of a DataFrame (replaced, missing: bounded by the changes, not the lake)."""
    return [r["docid"] for r in frame.select("docid").collect()]
