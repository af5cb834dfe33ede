"""What the join's Spark tasks run: fetch each batch's image bytes by position, write rows.

A task receives documents with the row position of each referenced image in
``image_lance`` (the id join already happened, ids only). For each batch of documents it
takes the referenced images' bytes with one Lance ``take`` (each distinct image once) and
writes the output rows as fragments of ``multimodal_lance``. Image bytes stay in Arrow
buffers from the ``take`` to the written batch: they never enter the JVM, never cross a
shuffle and never reach the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake.spark.fragment_job import FragmentSink, FragmentTask
from vlm_lake.tables import lance_io
from vlm_lake.tables.contracts import image_id_column, multimodal_schema

#: Column of each document's position in ``text_lance``: orders the output like the input.
DOC_POSITION = "_docpos"


def position_column(slot: int) -> str:
    """Column holding the row position in ``image_lance`` of slot ``slot``'s image."""
    return f"_pos{slot}"


@dataclass
class FetchAndWrite(FragmentTask):
    """Runs in Spark's Python workers: fetch image bytes by position, write fragments.

    Statistics per task: ``order`` (the first document's position), ``attached`` (image
    cells filled) and ``dangling`` (ids that name no image).
    """

    image_uri: str
    image_version: int
    num_slots: int
    batch_rows: int
    sink: FragmentSink
    image_storage: dict[str, str] = field(repr=False)

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """The output rows, ``batch_rows`` documents at a time, their bytes taken from Lance."""
        ds = lance_io.open_dataset(self.image_uri, self.image_storage, self.image_version)
        for big in batches:
            for offset in range(0, big.num_rows, self.batch_rows):
                batch = big.slice(offset, self.batch_rows)
                if "order" not in stats:
                    stats.update(
                        order=batch.column(DOC_POSITION)[0].as_py(), attached=0, dangling=0
                    )
                yield self._joined(ds, batch, stats)

    def _joined(self, ds: Any, batch: pa.RecordBatch, stats: dict[str, Any]) -> pa.RecordBatch:
        """One output batch: each slot's column is an Arrow ``take`` of the fetched bytes."""
        import numpy as np
        import pyarrow.compute as pc

        slots = range(1, self.num_slots + 1)
        positions = [batch.column(position_column(k)).cast(pa.int64()) for k in slots]
        wanted = np.unique(np.concatenate([p.drop_null().to_numpy() for p in positions]))
        wanted = wanted.astype(np.int64)
        fetched = None
        if len(wanted):
            table = ds.take(pa.array(wanted), columns=["image_data"])
            fetched = table.column("image_data").combine_chunks().cast(pa.binary())
        images = []
        for slot, pos in zip(slots, positions, strict=True):
            missing = pos.is_null()
            stats["attached"] += len(pos) - pos.null_count
            named = batch.column(image_id_column(slot)).is_valid()
            stats["dangling"] += pc.sum(pc.and_(named, missing)).as_py() or 0
            if fetched is None or pos.null_count == len(pos):
                images.append(pa.nulls(len(pos), pa.binary()))
                continue
            index = np.searchsorted(wanted, pos.fill_null(int(wanted[0])).to_numpy())
            mask = missing.to_numpy(zero_copy_only=False)
            images.append(fetched.take(pa.array(index, pa.int64(), mask=mask)))
        ids = [batch.column(image_id_column(k)).cast(pa.string()) for k in slots]
        return pa.RecordBatch.from_arrays(
            [batch.column("docid").cast(pa.string()), batch.column("text").cast(pa.string())]
            + ids
            + images,
            schema=multimodal_schema(self.num_slots),
        )
