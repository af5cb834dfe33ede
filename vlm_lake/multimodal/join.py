"""The join: documents + images -> ``multimodal_lance``, without shuffling image bytes.

The seed joins the image table (bytes included) three times, so every image's bytes cross
three shuffles and land on the driver. Here Spark joins *ids only*:

1. read ``docid, text, image_id1..K`` and each document's position from ``text_lance``;
2. read ``image_id`` and each image's row position from ``image_lance`` (no bytes);
3. left-join the ids K times against that small, broadcast id table, and order by the
   document position so the output keeps the input order;
4. in each task (:mod:`~vlm_lake.multimodal.fetch_task`), fetch the bytes of the
   referenced positions straight from Lance and write the output rows as fragments; the
   driver checks the row count and commits all fragments once
   (:mod:`~vlm_lake.spark.fragment_job`).

An incremental run redoes only the documents :mod:`~vlm_lake.multimodal.delta` finds
affected, and replaces their rows in the same single commit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlm_lake.multimodal.delta import affected_documents
from vlm_lake.multimodal.fetch_task import DOC_POSITION, FetchAndWrite, position_column
from vlm_lake.spark.fragment_job import FragmentSink, WrittenFragments, run_fragment_job
from vlm_lake.spark.lance_source import POSITION_COLUMN, read_lance
from vlm_lake.spark.session import spark_context
from vlm_lake.tables import fragments, lance_io, publish
from vlm_lake.tables.contracts import image_columns, image_id_columns, multimodal_schema
from vlm_lake.tables.layout import MULTIMODAL_LAYOUT, maintain

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MultimodalReport:
    """Result of the join.

    Attributes:
        summary: The output's latest version after the run (the candidate to check).
        committed: Whether this run wrote (False when no input change affects any row).
        full_rebuild: Whether the whole table was rebuilt rather than updated.
        num_slots: K.
        rows_written: Documents joined and written by this run.
        rows_deleted: Documents removed because they left ``text_lance``.
        images_attached: Image cells filled by this run.
        dangling_references: Image ids referenced by this run's rows but not found.
        image_version: Version of ``image_lance`` read.
        text_version: Version of ``text_lance`` read.
    """

    summary: lance_io.DatasetSummary
    committed: bool
    full_rebuild: bool
    num_slots: int
    rows_written: int
    rows_deleted: int
    images_attached: int
    dangling_references: int
    image_version: int
    text_version: int

    def lineage(self) -> dict[str, str]:
        """The input versions to record when this output is published."""
        return {"texts_version": str(self.text_version), "images_version": str(self.image_version)}


@dataclass
class _Join:
    """The datasets of one join run, opened at the versions it reads."""

    text_uri: str
    image_uri: str
    out_uri: str
    text_storage: dict[str, str] = field(repr=False)
    image_storage: dict[str, str] = field(repr=False)
    out_storage: dict[str, str] = field(repr=False)
    text_ds: Any = field(repr=False)
    image_ds: Any = field(repr=False)

    @property
    def slots(self) -> list[str]:
        return image_id_columns(self.text_ds.schema)

    def delta(self, full_rebuild: bool) -> tuple[set[str], set[str]] | None:
        """``(affected, removed)`` docids since the published output, or None: rebuild."""
        prev = None if full_rebuild else publish.published(self.out_uri, self.out_storage)
        if prev is None or not {"texts_version", "images_version"} <= prev.lineage.keys():
            return None
        prev_ds = lance_io.open_dataset(self.out_uri, self.out_storage, prev.version)
        names = prev_ds.schema.names
        old_images = [c for c in names if c.startswith("image") and not c.startswith("image_id")]
        if old_images != image_columns(len(self.slots)):  # K changed: rebuild
            return None
        return affected_documents(
            text_uri=self.text_uri,
            image_uri=self.image_uri,
            text_storage=self.text_storage,
            image_storage=self.image_storage,
            old_text_version=int(prev.lineage["texts_version"]),
            new_text_version=self.text_ds.version,
            old_image_version=int(prev.lineage["images_version"]),
            new_image_version=self.image_ds.version,
        )

    def log_plan(self, delta: tuple[set[str], set[str]] | None) -> None:
        """One line: what is joined into what, and whether fully or incrementally."""
        log.info(
            "joining %s (version %d, K=%d) to %s (version %d) into %s: %s",
            self.text_uri,
            self.text_ds.version,
            len(self.slots),
            self.image_uri,
            self.image_ds.version,
            self.out_uri,
            "full rebuild"
            if delta is None
            else f"{len(delta[0])} affected and {len(delta[1])} removed documents",
        )

    def report(
        self, committed: bool, written: WrittenFragments | None, **counts: Any
    ) -> MultimodalReport:
        """The report of this run, on the output's latest version."""
        ds = lance_io.open_dataset(self.out_uri, self.out_storage)
        return MultimodalReport(
            summary=lance_io.summarize(ds, self.out_uri),
            committed=committed,
            num_slots=len(self.slots),
            rows_written=written.rows if written else 0,
            images_attached=written.total("attached") if written else 0,
            dangling_references=written.total("dangling") if written else 0,
            image_version=self.image_ds.version,
            text_version=self.text_ds.version,
            **counts,
        )


def build_multimodal(
    spark: Any,
    *,
    text_uri: str,
    image_uri: str,
    out_uri: str,
    text_storage: dict[str, str] | None = None,
    image_storage: dict[str, str] | None = None,
    out_storage: dict[str, str] | None = None,
    text_version: int | str = "published",
    image_version: int | str = "published",
    full_rebuild: bool = False,
    broadcast_ids: bool = True,
    batch_rows: int = 64,
) -> MultimodalReport:
    """Left-join documents to images by id and write ``multimodal_lance``.

    The inputs are read at their published versions by default. If the output's published
    version records the input versions it was built from (its lineage) and K is unchanged,
    only the affected documents are joined again (see
    :func:`~vlm_lake.multimodal.delta.affected_documents`): their old rows are replaced by
    the new ones in one commit. Otherwise the whole table is rebuilt in one commit. Either
    way the result is a candidate until :func:`~vlm_lake.tables.publish.publish`.

    Args:
        spark: SparkSession with the ``lance`` data source registered, or a function that
            returns one (called only if there is something to join, so a run with no
            change never starts a JVM).
        text_uri: ``texts.lance`` URI.
        image_uri: ``images.lance`` URI.
        out_uri: ``multimodal.lance`` URI.
        text_storage: Storage options for ``text_uri``.
        image_storage: Storage options for ``image_uri`` (also used by executors).
        out_storage: Storage options for ``out_uri``.
        text_version: Version or tag of ``text_lance`` to read.
        image_version: Version or tag of ``image_lance`` to read.
        full_rebuild: Rebuild the whole table even if an incremental update is possible.
        broadcast_ids: Broadcast the id table (ids only; fine up to tens of millions of
            images). Turn off to let Spark choose a shuffle join on ids.
        batch_rows: Documents per ``take`` and per written batch.

    Returns:
        A :class:`MultimodalReport`.
    """
    join = _Join(
        text_uri,
        image_uri,
        out_uri,
        dict(text_storage or {}),
        dict(image_storage or {}),
        dict(out_storage or {}),
        publish.open_version(text_uri, text_storage, text_version),
        publish.open_version(image_uri, image_storage, image_version),
    )
    delta = join.delta(full_rebuild)
    join.log_plan(delta)
    if delta is not None:
        publish.discard_unpublished(out_uri, out_storage)
        if not delta[0]:
            return _remove_only(join, removed=delta[1])
    affected, removed = delta if delta is not None else (None, set())
    session = spark() if callable(spark) else spark
    written = _join_and_write(session, join, affected, broadcast_ids, batch_rows)
    written.check_rows(
        join.text_ds.count_rows() if affected is None else len(affected),
        f"documents (image_id must be unique in {image_uri!r})",
    )
    _commit(join, written, affected, removed)
    _upkeep(out_uri, out_storage, incremental=affected is not None)
    report = join.report(True, written, full_rebuild=affected is None, rows_deleted=len(removed))
    log.info(
        "multimodal: %d rows written (%s), %d images attached, %d dangling references, "
        "version %d with %d rows",
        report.rows_written,
        "full rebuild" if report.full_rebuild else "incremental",
        report.images_attached,
        report.dangling_references,
        report.summary.version,
        report.summary.num_rows,
    )
    return report


def _commit(
    join: _Join, written: WrittenFragments, affected: set[str] | None, removed: set[str]
) -> None:
    """One commit: overwrite, or (incremental) the affected rows' old versions out, new in."""
    fragments.commit_job(
        join.out_uri,
        multimodal_schema(len(join.slots)),
        join.out_storage,
        written.fragments,
        key="docid",
        remove=None if affected is None else affected | removed,
    )


def _remove_only(join: _Join, removed: set[str]) -> MultimodalReport:
    """No document to join: delete the rows of documents that left the source, if any."""
    fragments.replace_rows(
        join.out_uri, join.out_storage, key="docid", remove=removed, fragments_json=[]
    )
    if removed:
        _upkeep(join.out_uri, join.out_storage, incremental=True)
    return join.report(bool(removed), None, full_rebuild=False, rows_deleted=len(removed))


def _upkeep(
    out_uri: str, out_storage: dict[str, str] | None, *, incremental: bool
) -> lance.LanceDataset:
    """Index ``docid`` (and compact, by policy) on top of the join's commit; the latest.

    A full rebuild is not compacted: its fragments are the Spark tasks' outputs, one per
    task, and keep a later Spark read of the table as parallel as the join that wrote it.
    """
    maintain(out_uri, out_storage, MULTIMODAL_LAYOUT, allow_compaction=incremental)
    return lance_io.open_dataset(out_uri, out_storage)


def join_tasks(num_docs: int, cores: int | None) -> int:
    """Spark tasks (range partitions by document position) for joining ``num_docs`` documents.

    Each task fetches and writes its documents' images itself, so its memory and its output
    file grow with the documents it gets. Left to Spark, the sort after the id joins is
    coalesced into a few partitions whatever the size (the shuffled columns are small), so
    a large join would run as a few huge tasks in one wave. So each task gets at most
    ``MULTIMODAL_LAYOUT.rows_per_fragment`` documents (one data file), and the count is
    rounded up to whole waves over ``cores`` (when known: None under Spark Connect) so that
    no core idles through a last half-empty wave; never more tasks than documents.
    """
    need = max(1, math.ceil(num_docs / MULTIMODAL_LAYOUT.rows_per_fragment))
    if cores:
        need = math.ceil(need / cores) * cores
    return max(1, min(need, num_docs))


def _join_and_write(
    spark: Any,
    join: _Join,
    only_docids: set[str] | None,
    broadcast_ids: bool,
    batch_rows: int,
) -> WrittenFragments:
    """Run the id join on Spark; its tasks fetch the bytes and write the fragments."""
    from pyspark.sql import functions as F

    slots = join.slots
    texts = read_lance(
        spark,
        join.text_uri,
        storage_options=join.text_storage,
        columns=["docid", "text", *slots],
        version=join.text_ds.version,
        with_position=True,
    ).withColumnRenamed(POSITION_COLUMN, DOC_POSITION)
    if only_docids is not None:
        wanted = spark.createDataFrame([(d,) for d in sorted(only_docids)], "docid string")
        texts = texts.join(F.broadcast(wanted), on="docid", how="left_semi")
    ids = read_lance(
        spark,
        join.image_uri,
        storage_options=join.image_storage,
        columns=["image_id"],
        version=join.image_ds.version,
        with_position=True,
    )
    if broadcast_ids:
        ids = F.broadcast(ids)
    joined = texts
    positions = [position_column(k) for k in range(1, len(slots) + 1)]
    for slot, position in zip(slots, positions, strict=True):
        pairs = ids.select(F.col("image_id").alias(slot), F.col(POSITION_COLUMN).alias(position))
        joined = joined.join(pairs, on=slot, how="left")
    context = spark_context(spark)
    num_docs = join.text_ds.count_rows() if only_docids is None else len(only_docids)
    tasks = join_tasks(num_docs, context.defaultParallelism if context is not None else None)
    joined = (
        joined.select(DOC_POSITION, "docid", "text", *slots, *positions)
        .repartitionByRange(tasks, DOC_POSITION)
        .sortWithinPartitions(DOC_POSITION)
    )
    task = FetchAndWrite(
        image_uri=join.image_uri,
        image_version=join.image_ds.version,
        num_slots=len(slots),
        batch_rows=batch_rows,
        sink=FragmentSink(
            join.out_uri,
            multimodal_schema(len(slots)),
            join.out_storage,
            MULTIMODAL_LAYOUT.rows_per_fragment,
        ),
        image_storage=join.image_storage,
    )
    return run_fragment_job(joined, task)
