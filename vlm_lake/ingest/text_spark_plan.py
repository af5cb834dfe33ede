"""The text ingest's Spark scan and plan (see :mod:`vlm_lake.ingest.text_spark`).

The scan tasks stage one row per record; Spark SQL then gives each record its file-wide
line and record numbers, keeps one copy of each docid (the one the published table took,
else the first in key order) and finds K. Only the rejections and two numbers reach the
driver; the kept records stay a cached DataFrame.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError
from vlm_lake.ingest.quarantine import RejectedDocument
from vlm_lake.ingest.text_tasks import SCAN_SCHEMA, ScanTextsTask
from vlm_lake.ingest.text_units import TextUnit, offsets
from vlm_lake.spark.fragment_job import FragmentSink, run_fragment_job
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import fragments, lance_io

log = logging.getLogger(__name__)


def staging_uri(dataset_uri: str) -> str:
    """Where the scan rows of ``texts.lance`` are staged: ``texts.scan.lance``."""
    return re.sub(r"(\.lance)?/*$", "", dataset_uri) + ".scan.lance"


@dataclass(frozen=True)
class TextPlan:
    """What the Spark plan found (the big parts stay DataFrames).

    Attributes:
        winners: DataFrame of the kept records: ``unit, local_index, docid, sha256,
            slots, old_sha256``.
        cached: The cached DataFrame ``winners`` comes from (:meth:`release` frees it).
        documents: Valid documents in the source.
        num_slots: K found in the source.
        rejected: Every rejection, in source order, with file-wide numbers.
        tasks: Scan tasks run.
    """

    winners: Any
    cached: Any
    documents: int
    num_slots: int
    rejected: list[RejectedDocument]
    tasks: int

    def release(self) -> None:
        """Free what the plan cached on the executors."""
        self.cached.unpersist()


def _stage_scan(
    spark: Any, store: ObjectStore, units: list[TextUnit], dataset_uri: str, max_slots: int
) -> Any:
    """Run the scan tasks, stage their rows, and number them file-wide (a DataFrame)."""
    from pyspark.sql import functions as F

    from vlm_lake.spark.lance_source import read_lance

    stage_uri = staging_uri(dataset_uri)
    storage = store.storage_options(stage_uri)
    task = ScanTextsTask(
        settings=store.settings,
        units=units,
        max_slots=max_slots,
        sink=FragmentSink(stage_uri, SCAN_SCHEMA, storage),
    )
    tasks = len(units)
    written = run_fragment_job(spark.range(0, tasks, 1, max(1, tasks)), task)
    if written.fragments:
        fragments.commit_fragments(stage_uri, SCAN_SCHEMA, written.fragments, storage)
    else:  # no record in any file: an empty staging table
        lance_io.write_batches([], stage_uri, SCAN_SCHEMA, storage)
    counts = {int(u): c for s in written.stats for u, c in s.get("units", {}).items()}
    base = offsets(
        units, {u: c[0] for u, c in counts.items()}, {u: c[1] for u, c in counts.items()}
    )
    where = spark.createDataFrame(
        [(u.unit, u.file_no, u.uri, u.key, *base[u.unit], u.stop is not None) for u in units],
        "unit long, file_no long, uri string, key string, line_base long, record_base long, "
        "ranged boolean",
    )
    scan = read_lance(spark, stage_uri, storage_options=storage).join(where, "unit")
    return scan.withColumn(
        "line",
        F.when(F.col("ranged"), F.col("line_base") + F.col("local_line")).otherwise(
            F.col("local_line")
        ),
    ).withColumn("index", F.col("record_base") + F.col("local_index"))


def scan_on_spark(
    spark: Any,
    store: ObjectStore,
    units: list[TextUnit],
    dataset_uri: str,
    *,
    max_slots: int,
    published: Any,
    misnamed: list[RejectedDocument],
    strict: bool,
) -> TextPlan:
    """Scan every unit in Spark tasks and rank the copies of each docid.

    Args:
        spark: The SparkSession.
        store: The driver's store (its settings travel to the tasks).
        units: The work units, in file order.
        dataset_uri: ``texts.lance`` (the staging table goes beside it).
        max_slots: The highest image slot a record may use.
        published: DataFrame ``docid, record_sha256, source_uri`` of the published table.
        misnamed: Rejections of the listing (files that are not text sources).
        strict: Raise at the first rejection (``on_bad_input="fail"``).

    Raises:
        InvalidDocumentError: With ``strict``, the first bad file or record.
        DuplicateKeyError: With ``strict``, the first duplicate docid.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    scan = _stage_scan(spark, store, units, dataset_uri, max_slots)
    bad = [
        _rejection(r)
        for r in scan.where("stage IS NOT NULL").orderBy("unit", "line", "index").collect()
    ]
    pub = published.withColumnRenamed("record_sha256", "old_sha256").withColumnRenamed(
        "source_uri", "kept_uri"
    )
    valid = scan.where("stage IS NULL").join(pub, "docid", "left")
    window = Window.partitionBy("docid").orderBy(
        F.coalesce(F.col("uri") == F.col("kept_uri"), F.lit(False)).desc(), "file_no", "index"
    )
    first = Window.partitionBy("docid").orderBy("file_no", "index")
    ranked = (
        valid.withColumn("rank", F.row_number().over(window))
        .withColumn("earliest", F.row_number().over(first))
        .cache()
    )
    winners = ranked.where("rank = 1").select(
        "unit", "local_index", "docid", "sha256", "slots", "old_sha256", "file_no", "index"
    )
    duplicates = _duplicates(ranked, F)
    rejected = sorted(
        [*misnamed, *bad, *duplicates],
        key=lambda r: (r.source_uri, r.line or 0, r.record_index or 0),
    )
    if strict and rejected:
        _raise(rejected[0])
    summary = winners.agg(F.count("*").alias("n"), F.max("slots").alias("k")).collect()[0]
    k = max(1, int(summary["k"] or 0))
    return TextPlan(winners, ranked, int(summary["n"]), k, rejected, len(units))


def _rejection(row: Any) -> RejectedDocument:
    return RejectedDocument(
        row["uri"], row["stage"], row["line"], row["index"], row["docid"], row["reason"]
    )


def _duplicates(ranked: Any, F: Any) -> list[RejectedDocument]:  # noqa: N803 - pyspark's F
    """The losing copies of each docid, with the local path's reasons."""
    from pyspark.sql import Window

    win = Window.partitionBy("docid").orderBy(F.col("rank"))
    rows = (
        ranked.withColumn("w_uri", F.first("uri").over(win))
        .withColumn("w_line", F.first("line").over(win))
        .withColumn("w_index", F.first("index").over(win))
        .withColumn("w_kept", F.first(F.col("uri") == F.col("kept_uri")).over(win))
        .where("rank > 1")
        .collect()
    )
    out = []
    for r in rows:
        winner = r["w_uri"] + (
            f" line {r['w_line']}" if r["w_line"] else f" record #{r['w_index']}"
        )
        mine = r["uri"] + (f" line {r['line']}" if r["line"] else f" record #{r['index']}")
        if r["w_kept"] and r["earliest"] == 1:
            reason = (
                f"docid {r['docid']!r} appears twice: in {mine} and {r['w_uri']!r}; "
                f"the copy from {r['w_uri']!r}, already in the lake, is kept"
            )
        else:
            reason = (
                f"docid {r['docid']!r} appears twice: in {winner} and {r['uri']!r}; "
                "docid must be unique across all text files (the first one is kept)"
            )
        out.append(
            RejectedDocument(r["uri"], "duplicate", r["line"], r["index"], r["docid"], reason)
        )
    return out


def _raise(first: RejectedDocument) -> None:
    if first.stage == "duplicate":
        raise DuplicateKeyError(first.reason)
    raise InvalidDocumentError(first.source_uri, first.reason, line=first.line, stage=first.stage)
