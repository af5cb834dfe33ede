"""The join: documents + images -> ``multimodal_lance``, without shuffling image bytes.

The seed joins the image table (bytes included) three times, so every image's bytes cross
three shuffles and land on the driver. Here Spark joins *ids only*:

1. read ``docid, text, image_id1..K`` and each document's position from ``text_lance``;
2. read ``image_id`` and each image's row position from ``image_lance`` (no bytes);
3. left-join the ids K times against that small, broadcast id table, and order by the
   document position so the output keeps the input order;
4. in each task, fetch the bytes of the referenced positions straight from Lance with one
   ``take`` per batch (each distinct image once per batch), and write the output rows as
   Lance fragments right there; the driver commits all fragments once.

Image bytes never enter the JVM, never cross a shuffle and never reach the driver.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlm_lake import lance_io, publish
from vlm_lake.lance_layout import MULTIMODAL_LAYOUT, maintain
from vlm_lake.spark_lance import POSITION_COLUMN, read_lance
from vlm_lake.spark_session import spark_context
from vlm_lake.text_ingest import image_id_columns

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)

DOC_POSITION = "_docpos"


def image_columns(num_slots: int) -> list[str]:
    """Names of the image byte columns: ``image1`` ... ``imageK``."""
    return [f"image{k}" for k in range(1, num_slots + 1)]


#: Field metadata of the image byte columns: stored uncompressed, like ``image_data`` in
#: ``image_lance`` (JPEG/PNG bytes do not compress). Lance's default tries anyway: writing
#: the 10k-document join's 1 GB took 4.3-4.6 s (3.5 s of CPU) instead of 0.9-1.8 s, for
#: the same size on disk, and reading it back 2.0-3.7 s instead of 1.8-1.9 s.
IMAGE_BYTES_METADATA = {"lance-encoding:compression": "none"}


def multimodal_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``multimodal_lance``."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(f"image_id{k}", pa.string()) for k in range(1, num_slots + 1)]
        + [
            pa.field(name, pa.binary(), metadata=IMAGE_BYTES_METADATA)
            for name in image_columns(num_slots)
        ]
    )


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
class _FetchAndWrite:
    """Runs in Spark's Python workers: fetch image bytes by position, write fragments."""

    image_uri: str
    image_version: int
    out_uri: str
    num_slots: int
    batch_rows: int
    rows_per_file: int
    image_storage: dict[str, str] = field(repr=False)
    out_storage: dict[str, str] = field(repr=False)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stats = {"first": None, "rows": 0, "attached": 0, "dangling": 0}
        out = self._rows(batches, stats)
        first = next(out, None)
        if first is None:
            return
        import itertools

        fragments = lance_io.write_fragment_files(
            itertools.chain([first], out),
            self.out_uri,
            multimodal_schema(self.num_slots),
            self.out_storage,
            max_rows_per_file=self.rows_per_file,
        )
        yield pa.RecordBatch.from_pydict(
            {
                "first_position": [stats["first"]],
                "rows": [stats["rows"]],
                "attached": [stats["attached"]],
                "dangling": [stats["dangling"]],
                "fragments": [json.dumps(fragments)],
            },
            schema=_RESULT_SCHEMA,
        )

    def _rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """The output rows, ``batch_rows`` documents at a time, their bytes taken from Lance.

        Image bytes stay in Arrow buffers from the ``take`` to the written batch: each slot's
        column is an Arrow ``take`` of the fetched column (null where there is no image), so
        no byte string becomes a Python object.
        """
        import numpy as np
        import pyarrow.compute as pc

        ds = lance_io.open_dataset(self.image_uri, self.image_storage, self.image_version)
        schema = multimodal_schema(self.num_slots)
        id_cols = [f"image_id{k}" for k in range(1, self.num_slots + 1)]
        pos_cols = [f"_pos{k}" for k in range(1, self.num_slots + 1)]
        for big in batches:
            for offset in range(0, big.num_rows, self.batch_rows):
                batch = big.slice(offset, self.batch_rows)
                if stats["first"] is None:
                    stats["first"] = batch.column(DOC_POSITION)[0].as_py()
                positions = [batch.column(c).cast(pa.int64()) for c in pos_cols]
                wanted = np.unique(
                    np.concatenate([p.drop_null().to_numpy() for p in positions])
                ).astype(np.int64)
                fetched = None
                if len(wanted):
                    fetched = (
                        ds.take(pa.array(wanted), columns=["image_data"])
                        .column("image_data")
                        .combine_chunks()
                        .cast(pa.binary())
                    )
                image_arrays = []
                for id_col, pos in zip(id_cols, positions, strict=True):
                    missing = pos.is_null()
                    stats["attached"] += len(pos) - pos.null_count
                    stats["dangling"] += (
                        pc.sum(pc.and_(batch.column(id_col).is_valid(), missing)).as_py() or 0
                    )
                    if fetched is None or pos.null_count == len(pos):
                        image_arrays.append(pa.nulls(len(pos), pa.binary()))
                        continue
                    index = np.searchsorted(wanted, pos.fill_null(int(wanted[0])).to_numpy())
                    mask = missing.to_numpy(zero_copy_only=False)
                    image_arrays.append(fetched.take(pa.array(index, pa.int64(), mask=mask)))
                stats["rows"] += batch.num_rows
                yield pa.RecordBatch.from_arrays(
                    [
                        batch.column("docid").cast(pa.string()),
                        batch.column("text").cast(pa.string()),
                    ]
                    + [batch.column(c).cast(pa.string()) for c in id_cols]
                    + image_arrays,
                    schema=schema,
                )


_RESULT_SCHEMA = pa.schema(
    [
        pa.field("first_position", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("attached", pa.int64()),
        pa.field("dangling", pa.int64()),
        pa.field("fragments", pa.string()),
    ]
)
_RESULT_DDL = "first_position long, rows long, attached long, dangling long, fragments string"


def _key_hashes(
    uri: str, storage: dict[str, str] | None, version: int, key: str, value: str
) -> dict[str, str] | None:
    """``key -> value`` for one version, or None if that version lacks the columns."""
    ds = lance_io.open_dataset(uri, storage, version)
    if key not in ds.schema.names or value not in ds.schema.names:
        return None
    return lance_io.column_map(ds, key, value)


def _changed_keys(old: dict[str, str], new: dict[str, str]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def affected_documents(
    *,
    text_uri: str,
    image_uri: str,
    text_storage: dict[str, str] | None,
    image_storage: dict[str, str] | None,
    old_text_version: int,
    new_text_version: int,
    old_image_version: int,
    new_image_version: int,
) -> tuple[set[str], set[str]] | None:
    """Which documents of the join must be redone between two pairs of input versions.

    A document is affected when its own record changed (``record_sha256``) or when an image
    it references was added, removed or changed (``sha256``).

    Returns:
        ``(affected, removed)`` docids, or None when the old versions cannot be compared
        (a schema without the hash columns, or a version already cleaned up).
    """
    import pyarrow.compute as pc

    from vlm_lake.errors import DatasetNotFoundError

    try:
        old_docs = _key_hashes(text_uri, text_storage, old_text_version, "docid", "record_sha256")
        new_docs = _key_hashes(text_uri, text_storage, new_text_version, "docid", "record_sha256")
        old_imgs = _key_hashes(image_uri, image_storage, old_image_version, "image_id", "sha256")
        new_imgs = _key_hashes(image_uri, image_storage, new_image_version, "image_id", "sha256")
    except (DatasetNotFoundError, OSError, ValueError) as exc:
        log.warning("cannot compare input versions (%s); rebuilding the join", exc)
        return None
    if None in (old_docs, new_docs, old_imgs, new_imgs):
        return None
    assert old_docs is not None and new_docs is not None  # for type checkers
    assert old_imgs is not None and new_imgs is not None
    removed = set(old_docs) - set(new_docs)
    affected = _changed_keys(old_docs, new_docs) - removed
    changed_images = _changed_keys(old_imgs, new_imgs)
    if changed_images:
        text_ds = lance_io.open_dataset(text_uri, text_storage, new_text_version)
        slots = image_id_columns(text_ds.schema)
        table = text_ds.to_table(columns=["docid", *slots])
        value_set = pa.array(sorted(changed_images), pa.string())
        mask = None
        for slot in slots:
            hit = pc.fill_null(pc.is_in(table.column(slot), value_set=value_set), False)
            mask = hit if mask is None else pc.or_(mask, hit)
        if mask is not None:
            affected |= set(table.column("docid").filter(mask).to_pylist())
    return affected, removed


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
    only the affected documents are joined again (see :func:`affected_documents`): their
    old rows are replaced by the new ones in one commit. Otherwise the whole table is rebuilt in
    one commit. Either way the result is a candidate until :func:`~vlm_lake.publish.publish`.

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
    text_ds = publish.open_version(text_uri, text_storage, text_version)
    image_ds = publish.open_version(image_uri, image_storage, image_version)
    slots = image_id_columns(text_ds.schema)
    num_slots = len(slots)
    prev = None if full_rebuild else publish.published(out_uri, out_storage)
    delta = None
    if prev is not None and {"texts_version", "images_version"} <= prev.lineage.keys():
        prev_ds = lance_io.open_dataset(out_uri, out_storage, prev.version)
        if image_columns(num_slots) == [
            c
            for c in prev_ds.schema.names
            if c.startswith("image") and not c.startswith("image_id")
        ]:
            delta = affected_documents(
                text_uri=text_uri,
                image_uri=image_uri,
                text_storage=text_storage,
                image_storage=image_storage,
                old_text_version=int(prev.lineage["texts_version"]),
                new_text_version=text_ds.version,
                old_image_version=int(prev.lineage["images_version"]),
                new_image_version=image_ds.version,
            )
    log.info(
        "joining %s (version %d, K=%d) to %s (version %d) into %s: %s",
        text_uri,
        text_ds.version,
        num_slots,
        image_uri,
        image_ds.version,
        out_uri,
        "full rebuild"
        if delta is None
        else f"{len(delta[0])} affected and {len(delta[1])} removed documents",
    )
    if delta is not None:
        publish.discard_unpublished(out_uri, out_storage)
        affected, removed = delta
        if not affected:  # nothing to join: delete what left the source, if anything
            ds = lance_io.replace_rows(
                out_uri, out_storage, key="docid", remove=removed, fragments_json=[]
            )
            if removed:
                ds = _upkeep(out_uri, out_storage, incremental=True)
            return MultimodalReport(
                lance_io.summarize(ds, out_uri),
                bool(removed),
                False,
                num_slots,
                0,
                len(removed),
                0,
                0,
                image_ds.version,
                text_ds.version,
            )
    else:
        affected, removed = None, set()
    expected = text_ds.count_rows() if affected is None else len(affected)
    results = _join_and_write(
        spark() if callable(spark) else spark,
        text_uri=text_uri,
        image_uri=image_uri,
        out_uri=out_uri,
        text_storage=text_storage,
        image_storage=image_storage,
        out_storage=out_storage,
        text_version=text_ds.version,
        image_version=image_ds.version,
        slots=slots,
        only_docids=affected,
        broadcast_ids=broadcast_ids,
        batch_rows=batch_rows,
        num_docs=expected,
    )
    fragments = [f for r in results for f in json.loads(r["fragments"])]
    produced = sum(r["rows"] for r in results)
    if produced != expected:  # checked before the commit: a wrong join is never written
        raise RuntimeError(
            f"the join produced {produced} rows for {expected} documents; image_id must be "
            f"unique in {image_uri!r}"
        )
    schema = multimodal_schema(num_slots)
    if affected is None:
        lance_io.commit_fragments(out_uri, schema, fragments, out_storage, mode="overwrite")
    else:  # the affected rows' old versions out, the new ones in: one commit
        lance_io.replace_rows(
            out_uri, out_storage, key="docid", remove=affected | removed, fragments_json=fragments
        )
    ds = _upkeep(out_uri, out_storage, incremental=affected is not None)
    report = MultimodalReport(
        summary=lance_io.summarize(ds, out_uri),
        committed=True,
        full_rebuild=affected is None,
        num_slots=num_slots,
        rows_written=produced,
        rows_deleted=len(removed),
        images_attached=sum(r["attached"] for r in results),
        dangling_references=sum(r["dangling"] for r in results),
        image_version=image_ds.version,
        text_version=text_ds.version,
    )
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
    file grow with the documents it gets. Left to Spark, the sort after the id joins was
    coalesced into a few partitions whatever the size, since the shuffled columns (ids,
    positions, text) are small: at 25k documents 2 tasks of 12.5k each, 1.3 GB of images
    and 0.5 GB of memory per Python worker, and one wave for any number of cores. So each
    task gets at most ``MULTIMODAL_LAYOUT.rows_per_fragment`` documents (one data file),
    and the count is rounded up to whole waves over ``cores`` (when known: None under
    Spark Connect) so that no core idles through a last half-empty wave; never more tasks
    than documents.
    """
    need = max(1, math.ceil(num_docs / MULTIMODAL_LAYOUT.rows_per_fragment))
    if cores:
        need = math.ceil(need / cores) * cores
    return max(1, min(need, num_docs))


def _join_and_write(
    spark: Any,
    *,
    text_uri: str,
    image_uri: str,
    out_uri: str,
    text_storage: dict[str, str] | None,
    image_storage: dict[str, str] | None,
    out_storage: dict[str, str] | None,
    text_version: int,
    image_version: int,
    slots: list[str],
    only_docids: set[str] | None,
    broadcast_ids: bool,
    batch_rows: int,
    num_docs: int,
) -> list[dict[str, Any]]:
    """Run the id join on Spark; tasks write fragments. Returns the per-task results."""
    from pyspark.sql import functions as F

    num_slots = len(slots)
    texts = read_lance(
        spark,
        text_uri,
        storage_options=text_storage,
        columns=["docid", "text", *slots],
        version=text_version,
        with_position=True,
    ).withColumnRenamed(POSITION_COLUMN, DOC_POSITION)
    if only_docids is not None:
        wanted = spark.createDataFrame([(d,) for d in sorted(only_docids)], "docid string")
        texts = texts.join(F.broadcast(wanted), on="docid", how="left_semi")
    ids = read_lance(
        spark,
        image_uri,
        storage_options=image_storage,
        columns=["image_id"],
        version=image_version,
        with_position=True,
    )
    if broadcast_ids:
        ids = F.broadcast(ids)
    joined = texts
    for k, slot in enumerate(slots, start=1):
        joined = joined.join(
            ids.select(F.col("image_id").alias(slot), F.col(POSITION_COLUMN).alias(f"_pos{k}")),
            on=slot,
            how="left",
        )
    context = spark_context(spark)
    tasks = join_tasks(num_docs, context.defaultParallelism if context is not None else None)
    joined = (
        joined.select(
            DOC_POSITION, "docid", "text", *slots, *(f"_pos{k}" for k in range(1, num_slots + 1))
        )
        .repartitionByRange(tasks, DOC_POSITION)
        .sortWithinPartitions(DOC_POSITION)
    )

    task = _FetchAndWrite(
        image_uri=image_uri,
        image_version=image_version,
        out_uri=out_uri,
        num_slots=num_slots,
        batch_rows=batch_rows,
        rows_per_file=MULTIMODAL_LAYOUT.rows_per_fragment,
        image_storage=dict(image_storage or {}),
        out_storage=dict(out_storage or {}),
    )
    return sorted(
        (r.asDict() for r in joined.mapInArrow(task, _RESULT_DDL).collect()),
        key=lambda r: r["first_position"],
    )
