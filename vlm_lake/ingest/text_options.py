"""The text ingest's options and report (both engines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_lake.ingest.changes import IngestReport
from vlm_lake.ingest.quarantine import check_on_bad_input
from vlm_lake.ingest.text_units import SPLIT_BYTES
from vlm_lake.spark.engine import check_engine, use_spark
from vlm_lake.tables.contracts import MAX_IMAGE_SLOTS


@dataclass(frozen=True)
class TextIngestReport(IngestReport):
    """Result of a text ingest (see :class:`~vlm_lake.ingest.changes.IngestReport`).

    Attributes:
        files: Text files read.
        documents: Valid documents in the source.
        num_slots: K, the number of image-id columns.
        spark_tasks: Scan tasks run on Spark (0 on the local path).
    """

    files: int = 0
    documents: int = 0
    num_slots: int = 1
    spark_tasks: int = 0


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
        engine: ``local`` (this process reads every file), ``spark`` (Spark tasks scan and
            write, per file or per byte range of a large JSON Lines file; see
            :mod:`~vlm_lake.ingest.text_spark`) or ``auto`` (Spark when a session is given
            and the text files hold at least ``spark_min_bytes``).
        spark_min_bytes: Source bytes from which ``auto`` uses Spark.
        split_bytes: On Spark, JSON Lines files above this size are read as ranges of it.
    """

    batch_rows: int = 4096
    full_rebuild: bool = False
    on_bad_input: str = "quarantine"
    delete_missing: bool = False
    max_image_slots: int = MAX_IMAGE_SLOTS
    engine: str = "auto"
    spark_min_bytes: int = 256 * 1024 * 1024
    split_bytes: int = SPLIT_BYTES

    def __post_init__(self) -> None:
        check_on_bad_input(self.on_bad_input)
        if self.max_image_slots < 1:
            raise ValueError(f"max_image_slots={self.max_image_slots!r} must be at least 1")
        check_engine(self.engine)

    def use_spark(self, spark: Any, source_bytes: int) -> bool:
        """Whether this run scans and writes on Spark (see ``engine``).

        Raises:
            ValueError: ``engine="spark"`` without a Spark session.
        """
        return use_spark(self.engine, spark, source_bytes, self.spark_min_bytes)
