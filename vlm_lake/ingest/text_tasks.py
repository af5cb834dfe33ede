"""What the text ingest's Spark tasks run: scan units of the source, then write documents.

* :class:`ScanTextsTask` (first pass): each task reads its units (whole files or byte
  ranges of large JSON Lines files), validates every record and hashes the good ones. It
  writes one small row per record (docid, hash, highest slot, where it is) or per
  rejection to a staging Lance table, and returns how many lines and records each unit
  held. No text comes back to the driver.
* :class:`WriteTextsTask` (second pass): each task gets the records to write (unit and
  record number), reads those units again and writes the documents as uncommitted
  fragments of ``texts.lance`` through the fragment protocol.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake.curation.text_signals import text_batch
from vlm_lake.errors import InvalidDocumentError
from vlm_lake.ingest.text_records import check_record, record_hash, record_slots
from vlm_lake.ingest.text_units import TextUnit, unit_records
from vlm_lake.spark.fragment_job import FragmentSink, FragmentTask
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables.contracts import image_id_column, text_schema

log = logging.getLogger(__name__)

#: One row per record (or rejection) of the first pass.
SCAN_SCHEMA = pa.schema(
    [
        pa.field("unit", pa.int64()),
        pa.field("local_line", pa.int64()),
        pa.field("local_index", pa.int64()),
        pa.field("docid", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("slots", pa.int32()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
    ]
)


def _scan_row(unit: int, line: int | None, index: int | None, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SCAN_SCHEMA.names)
    row.update(unit=unit, local_line=line, local_index=index, **values)
    return row


@dataclass
class ScanTextsTask(FragmentTask):
    """Runs in Spark's Python workers: unit numbers -> scan rows in staging fragments.

    Statistics per task: ``order`` (its first unit) and ``units``: ``{unit: [lines,
    records]}`` (lines a range owns; valid JSON values read).
    """

    settings: StoreSettings | None = field(repr=False)
    units: list[TextUnit]
    max_slots: int
    sink: FragmentSink

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """Validate and hash every record of this partition's units."""
        store = ObjectStore(self.settings)
        counts: dict[str, list[int]] = {}
        for batch in batches:
            for number in batch.column(0).to_pylist():
                unit = self.units[int(number)]
                stats.setdefault("order", unit.unit)
                rows, lines, records = self._scan(store, unit)
                counts[str(unit.unit)] = [lines, records]
                if rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=SCAN_SCHEMA)
        stats["units"] = counts

    def _scan(self, store: ObjectStore, unit: TextUnit) -> tuple[list[dict[str, Any]], int, int]:
        rows: list[dict[str, Any]] = []
        read: dict[str, int] = {}
        index = -1
        for line, record in unit_records(store, unit, read):
            if isinstance(record, InvalidDocumentError):
                reason = record.problem
                rows.append(
                    _scan_row(unit.unit, record.line, None, stage=record.stage, reason=reason)
                )
                continue
            index += 1
            try:
                slots = check_record(record, unit.info, line, index, self.max_slots)
            except InvalidDocumentError as exc:
                docid = record.get("docid") if isinstance(record, dict) else None
                text = None if docid is None else str(docid)
                rows.append(
                    _scan_row(
                        unit.unit, line, index, docid=text, stage=exc.stage, reason=exc.problem
                    )
                )
                continue
            assert isinstance(record, dict)
            digest = record_hash(record["docid"], record["text"], slots)
            top = max(slots, default=0)
            rows.append(
                _scan_row(unit.unit, line, index, docid=record["docid"], sha256=digest, slots=top)
            )
        return rows, read.get("lines", 0), index + 1


@dataclass
class WriteTextsTask(FragmentTask):
    """Runs in Spark's Python workers: (unit, record number) rows -> text rows in fragments.

    Statistics per task: ``order`` (its first unit) and ``written`` (rows).
    """

    settings: StoreSettings | None = field(repr=False)
    units: list[TextUnit]
    num_slots: int
    batch_rows: int
    sink: FragmentSink

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """The wanted documents of this partition's units, as ``text_schema`` batches."""
        wanted: dict[int, dict[int, str]] = defaultdict(dict)
        for batch in batches:
            for row in batch.to_pylist():
                wanted[int(row["unit"])][int(row["local_index"])] = row["sha256"]
        if not wanted:
            return
        stats["order"] = min(wanted)
        store = ObjectStore(self.settings)
        schema = text_schema(self.num_slots)
        out: list[dict[str, Any]] = []
        for number in sorted(wanted):
            unit, picks = self.units[number], wanted[number]
            for row in self._documents(store, unit, picks):
                out.append(row)
                if len(out) >= self.batch_rows:
                    yield text_batch(out, schema)
                    out = []
        if out:
            yield text_batch(out, schema)

    def _documents(
        self, store: ObjectStore, unit: TextUnit, picks: dict[int, str]
    ) -> Iterator[dict[str, Any]]:
        index = -1
        for _line, record in unit_records(store, unit):
            if isinstance(record, InvalidDocumentError):
                continue
            index += 1
            digest = picks.get(index)
            if digest is None:
                continue
            assert isinstance(record, dict)
            slots = record_slots(record)
            row = {"docid": record["docid"], "text": record["text"]}
            row.update({image_id_column(k): slots.get(k) for k in range(1, self.num_slots + 1)})
            row.update({"source_uri": unit.uri, "record_sha256": digest})
            yield row
