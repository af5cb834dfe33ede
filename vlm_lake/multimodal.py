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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake import lance_io
from vlm_lake.spark_lance import POSITION_COLUMN, read_lance
from vlm_lake.text_ingest import image_id_columns

log = logging.getLogger(__name__)

DOC_POSITION = "_docpos"


def image_columns(num_slots: int) -> list[str]:
    """Names of the image byte columns: ``image1`` ... ``imageK``."""
    return [f"image{k}" for k in range(1, num_slots + 1)]


def multimodal_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``multimodal_lance``."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(f"image_id{k}", pa.string()) for k in range(1, num_slots + 1)]
        + [pa.field(name, pa.binary()) for name in image_columns(num_slots)]
    )


@dataclass(frozen=True)
class MultimodalReport:
    """Result of the join."""

    summary: lance_io.DatasetSummary
    num_slots: int
    images_attached: int
    dangling_references: int
    image_version: int
    text_version: int


@dataclass
class _FetchAndWrite:
    """Runs in Spark's Python workers: fetch image bytes by position, write fragments."""

    image_uri: str
    image_version: int
    out_uri: str
    num_slots: int
    batch_rows: int
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
        ds = lance_io.open_dataset(self.image_uri, self.image_storage, self.image_version)
        schema = multimodal_schema(self.num_slots)
        id_cols = [f"image_id{k}" for k in range(1, self.num_slots + 1)]
        pos_cols = [f"_pos{k}" for k in range(1, self.num_slots + 1)]
        for big in batches:
            for offset in range(0, big.num_rows, self.batch_rows):
                batch = big.slice(offset, self.batch_rows)
                if stats["first"] is None:
                    stats["first"] = batch.column(DOC_POSITION)[0].as_py()
                positions = [batch.column(c).to_pylist() for c in pos_cols]
                ids = [batch.column(c).to_pylist() for c in id_cols]
                wanted = sorted({p for col in positions for p in col if p is not None})
                fetched: dict[int, bytes] = {}
                if wanted:
                    table = ds.take(wanted, columns=["image_data"])
                    fetched = dict(zip(wanted, table.column("image_data").to_pylist(), strict=True))
                image_arrays = []
                for col_ids, col_pos in zip(ids, positions, strict=True):
                    values = [fetched[p] if p is not None else None for p in col_pos]
                    stats["attached"] += sum(v is not None for v in values)
                    stats["dangling"] += sum(
                        i is not None and p is None for i, p in zip(col_ids, col_pos, strict=True)
                    )
                    image_arrays.append(pa.array(values, pa.binary()))
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


def build_multimodal(
    spark: Any,
    *,
    text_uri: str,
    image_uri: str,
    out_uri: str,
    text_storage: dict[str, str] | None = None,
    image_storage: dict[str, str] | None = None,
    out_storage: dict[str, str] | None = None,
    broadcast_ids: bool = True,
    batch_rows: int = 64,
) -> MultimodalReport:
    """Left-join documents to images by id and write ``multimodal_lance`` in one commit.

    Args:
        spark: SparkSession with the ``lance`` data source registered.
        text_uri: ``texts.lance`` URI.
        image_uri: ``images.lance`` URI.
        out_uri: ``multimodal.lance`` URI.
        text_storage: Storage options for ``text_uri``.
        image_storage: Storage options for ``image_uri`` (also used by executors).
        out_storage: Storage options for ``out_uri``.
        broadcast_ids: Broadcast the id table (ids only; fine up to tens of millions of
            images). Turn off to let Spark choose a shuffle join on ids.
        batch_rows: Documents per ``take`` and per written batch.

    Returns:
        A :class:`MultimodalReport`.
    """
    from pyspark.sql import functions as F

    text_ds = lance_io.open_dataset(text_uri, text_storage)
    image_ds = lance_io.open_dataset(image_uri, image_storage)
    slots = image_id_columns(text_ds.schema)
    num_slots = len(slots)
    log.info(
        "joining %s (version %d, K=%d) to %s (version %d) into %s",
        text_uri,
        text_ds.version,
        num_slots,
        image_uri,
        image_ds.version,
        out_uri,
    )

    texts = read_lance(
        spark,
        text_uri,
        storage_options=text_storage,
        columns=["docid", "text", *slots],
        version=text_ds.version,
        with_position=True,
    ).withColumnRenamed(POSITION_COLUMN, DOC_POSITION)
    ids = read_lance(
        spark,
        image_uri,
        storage_options=image_storage,
        columns=["image_id"],
        version=image_ds.version,
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
    joined = joined.select(
        DOC_POSITION, "docid", "text", *slots, *(f"_pos{k}" for k in range(1, num_slots + 1))
    ).orderBy(DOC_POSITION)

    task = _FetchAndWrite(
        image_uri=image_uri,
        image_version=image_ds.version,
        out_uri=out_uri,
        num_slots=num_slots,
        batch_rows=batch_rows,
        image_storage=dict(image_storage or {}),
        out_storage=dict(out_storage or {}),
    )
    results = sorted(
        (r.asDict() for r in joined.mapInArrow(task, _RESULT_DDL).collect()),
        key=lambda r: r["first_position"],
    )
    fragments = [f for r in results for f in json.loads(r["fragments"])]
    produced, expected = sum(r["rows"] for r in results), text_ds.count_rows()
    if produced != expected:  # checked before the commit: a wrong join is never published
        raise RuntimeError(
            f"the join produced {produced} rows for {expected} documents; image_id must be "
            f"unique in {image_uri!r}"
        )
    ds = lance_io.commit_fragments(
        out_uri, multimodal_schema(num_slots), fragments, out_storage, mode="overwrite"
    )
    report = MultimodalReport(
        summary=lance_io.summarize(ds, out_uri),
        num_slots=num_slots,
        images_attached=sum(r["attached"] for r in results),
        dangling_references=sum(r["dangling"] for r in results),
        image_version=image_ds.version,
        text_version=text_ds.version,
    )
    log.info(
        "multimodal: %d documents, %d images attached, %d dangling references, version %d",
        report.summary.num_rows,
        report.images_attached,
        report.dangling_references,
        report.summary.version,
    )
    return report
