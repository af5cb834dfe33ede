"""Near-duplicate pairs at any size: every image queries the vector index, in tasks.

Each task takes a range of rows of ``image_features``, asks the IVF_PQ index for each
row's ``neighbours`` nearest candidates (cosine; at least ``nprobes`` partitions searched)
and computes the exact cosine of each candidate from the stored vectors: a pair counts
when that exact value reaches the threshold. A pair is emitted as ``(smaller id, larger
id)`` from whichever side finds it; on Spark the pairs stay a DataFrame (``distinct``,
count, the top examples), so the driver holds only the answer. Cost: one index query per
image instead of all pairs; recall is the index's (an image with more than
``neighbours - 1`` near-duplicates reports only that many from its own side).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_lake.features.near_duplicates import NearDuplicates
from vlm_lake.features.vectors import unit_rows, vector_dim
from vlm_lake.tables import lance_io, reads

log = logging.getLogger(__name__)

#: Candidates asked of the index per image (itself included).
NEIGHBOURS = 16
#: Rows of ``image_features`` per task.
ROWS_PER_TASK = 20_000
PAIR_SCHEMA = pa.schema(
    [pa.field("a", pa.string()), pa.field("b", pa.string()), pa.field("cosine", pa.float64())]
)


@dataclass(frozen=True)
class FindPairs:
    """Picklable: the near-duplicate pairs one range of rows finds through the index."""

    uri: str
    version: int
    threshold: float
    storage: dict[str, str] = field(repr=False)
    neighbours: int = NEIGHBOURS
    nprobes: int = 20
    rows_per_task: int = ROWS_PER_TASK
    key: str = "image_id"
    column: str = "features"

    def pairs(self, start: int, stop: int) -> Iterator[tuple[str, str, float]]:
        """``(a, b, cosine)`` with ``a < b`` for the rows ``[start, stop)``."""
        ds = lance_io.open_dataset(self.uri, self.storage, self.version)
        dim = vector_dim(ds, self.column)
        for batch in reads.read_ranges(ds, [self.key, self.column], 256, start=start, stop=stop):
            vectors, ok = unit_rows(batch.column(self.column), dim)
            for row, image_id in enumerate(batch.column(self.key).to_pylist()):
                if ok[row]:
                    yield from self._neighbours(ds, dim, image_id, vectors[row].numpy())

    def _neighbours(
        self, ds: Any, dim: int, image_id: str, query: np.ndarray
    ) -> Iterator[tuple[str, str, float]]:
        nearest = {
            "column": self.column,
            "q": query,
            "k": self.neighbours,
            "metric": "cosine",
            "minimum_nprobes": self.nprobes,
        }
        found = ds.to_table(columns=[self.key, self.column, "_distance"], nearest=nearest)
        candidates, ok = unit_rows(found.column(self.column).combine_chunks(), dim)
        cosines = candidates.numpy() @ query  # exact, from the stored vectors
        for other, cosine, good in zip(
            found.column(self.key).to_pylist(), cosines, ok, strict=True
        ):
            if good and other != image_id and cosine >= self.threshold:
                a, b = sorted((image_id, other))
                yield a, b, round(float(cosine), 6)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Spark side: unit numbers -> pair rows (``mapInArrow``)."""
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                start = int(unit) * self.rows_per_task
                found = list(self.pairs(start, start + self.rows_per_task))
                if found:
                    a, b, c = zip(*found, strict=True)
                    yield pa.RecordBatch.from_pydict(
                        {"a": list(a), "b": list(b), "cosine": list(c)}, schema=PAIR_SCHEMA
                    )


def _plan(
    ds: Any, threshold: float, storage: dict[str, str] | None, rows_per_task: int
) -> tuple[FindPairs, int, int]:
    """The task function, the rows and the number of tasks of one search."""
    if rows_per_task < 1:
        raise ValueError(f"rows_per_task={rows_per_task!r} must be a positive number of rows")
    rows = ds.count_rows()
    find = FindPairs(
        ds.uri, ds.version, threshold, dict(storage or {}), rows_per_task=rows_per_task
    )
    return find, rows, -(-rows // rows_per_task)


def _pair_frame(session: Any, find: FindPairs, units: int) -> Any:
    """The pairs as a Spark DataFrame: one task per unit of rows."""
    return session.range(0, units, 1, units).mapInArrow(find, "a string, b string, cosine double")


def index_near_duplicates(
    ds: Any,
    *,
    threshold: float,
    storage: dict[str, str] | None = None,
    spark: Callable[[], Any] | None = None,
    max_examples: int = 20,
    rows_per_task: int = ROWS_PER_TASK,
) -> NearDuplicates:
    """Near-duplicate pairs of every row of ``ds`` through its vector index.

    Args:
        ds: ``image_features`` pinned to a version (with a vector index on ``features``;
            without one each query is a flat scan: correct, but quadratic).
        threshold: Minimum exact cosine similarity of a pair.
        storage: Lance storage options of ``ds`` (they travel to the tasks).
        spark: Returns a SparkSession: the queries run as Spark tasks of
            ``rows_per_task`` rows; None runs them here.
        max_examples: Most similar pairs to return.
        rows_per_task: Rows of ``ds`` each Spark task queries for (a positive number).
    """
    started = time.perf_counter()
    find, rows, units = _plan(ds, threshold, storage, rows_per_task)
    if spark is not None and units:
        pairs = _pair_frame(spark(), find, units).distinct().cache()
        try:
            count = pairs.count()
            top = pairs.orderBy(pairs.cosine.desc(), "a", "b").limit(max_examples).collect()
            examples = [(r["a"], r["b"], r["cosine"]) for r in top]
        finally:
            pairs.unpersist()
    else:
        found = {(a, b): c for a, b, c in find.pairs(0, rows)}
        count = len(found)
        ranked = sorted(found.items(), key=lambda item: (-item[1], item[0]))[:max_examples]
        examples = [(a, b, c) for (a, b), c in ranked]
    log.info(
        "near-duplicates through the index: %d pairs with cosine >= %g among %d images "
        "(%d tasks) in %.2fs",
        count,
        threshold,
        rows,
        units if spark is not None else 0,
        time.perf_counter() - started,
    )
    return NearDuplicates(threshold, count, examples, rows, rows)


def index_pairs(
    ds: Any,
    *,
    threshold: float,
    storage: dict[str, str] | None = None,
    spark: Callable[[], Any] | None = None,
    rows_per_task: int = ROWS_PER_TASK,
) -> list[tuple[str, str, float]]:
    """Every near-duplicate pair of ``ds`` through its vector index (for the curation).

    As :func:`index_near_duplicates`, but the pairs themselves come back, one per
    unordered pair: the driver holds the duplicates, not the images.
    """
    find, rows, units = _plan(ds, threshold, storage, rows_per_task)
    if spark is not None and units:
        found = {(r["a"], r["b"]): r["cosine"] for r in _pair_frame(spark(), find, units).collect()}
    else:
        found = {(a, b): c for a, b, c in find.pairs(0, rows)}
    return [(a, b, c) for (a, b), c in sorted(found.items())]
