"""Run a function over a list of small work items as Spark tasks, one item per task.

For jobs whose items are few and heavy (a training shard to write or to check): the
items travel inside the task (pickled with the function), each task returns its result as
JSON, and only those results reach the driver. ``mapInArrow`` over a ``range`` works the
same on a classic session and under Spark Connect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

RESULT_DDL = "index long, result string"


@dataclass
class _UnitTask:
    """Runs in Spark's Python workers: item numbers -> ``fn(item)`` as JSON."""

    fn: Callable[[Any], dict[str, Any]]
    items: Sequence[Any]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for index in batch.column(0).to_pylist():
                result = json.dumps(self.fn(self.items[int(index)]))
                yield pa.RecordBatch.from_pydict({"index": [int(index)], "result": [result]})


def map_units(
    spark: Any, fn: Callable[[Any], dict[str, Any]], items: Sequence[Any]
) -> list[dict[str, Any]]:
    """``[fn(item) for item in items]``, each call in its own Spark task, in input order.

    Args:
        spark: The SparkSession.
        fn: A picklable function returning a JSON-serialisable dict.
        items: The work items (picklable, small: they travel with every task).
    """
    if not items:
        return []
    job = spark.range(0, len(items), 1, len(items)).mapInArrow(_UnitTask(fn, items), RESULT_DDL)
    rows = sorted(job.collect(), key=lambda r: r["index"])
    return [json.loads(r["result"]) for r in rows]
