"""One protocol for every distributed write: tasks write fragments, the driver commits once.

Spark tasks write Lance fragments, the driver checks the row count and commits once:

* In the executors a :class:`FragmentTask` turns its share of the input into Arrow batches
  (:meth:`FragmentTask.rows`) and writes them with its :class:`FragmentSink` as
  *uncommitted* Lance fragments. It returns one small result row: the fragments' metadata
  (JSON), the rows written, an ordering key and its own statistics. No row data ever
  comes back to the driver.
* On the driver :func:`run_fragment_job` runs the tasks with ``mapInArrow``, collects the
  result rows, and :meth:`WrittenFragments.check_rows` refuses a job that wrote another
  number of rows than planned, before anything is committed.
* The commit is one Lance transaction (``overwrite``, ``append``, or an ``Update`` that
  also deletes replaced rows; see :mod:`vlm_lake.tables.fragments`). A failed job or a
  failed check commits nothing, so readers keep the previous version; the files of
  uncommitted fragments are invisible and removed by Lance's ``cleanup_old_versions``.

The join (:mod:`vlm_lake.multimodal.fetch_task`), the feature job
(:mod:`vlm_lake.features.tasks`) and the ``lance`` data source's writer
(:mod:`vlm_lake.spark.lance_source`) all write this way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake.tables import fragments

log = logging.getLogger(__name__)

#: The result row each task returns, as Arrow and as Spark DDL for ``mapInArrow``.
RESULT_SCHEMA = pa.schema(
    [
        pa.field("order", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("fragments", pa.string()),
        pa.field("stats", pa.string()),
    ]
)
RESULT_DDL = "order long, rows long, fragments string, stats string"


@dataclass
class FragmentSink:
    """Where a task's rows go: uncommitted fragments of one Lance dataset.

    Attributes:
        uri: The dataset URI.
        schema: The schema of the rows (the dataset's).
        storage: Lance storage options (they travel inside the task; see docs/deployment.md).
        rows_per_file: Rows per data file.
    """

    uri: str
    schema: pa.Schema
    storage: dict[str, str] = field(repr=False)
    rows_per_file: int = 1024 * 1024

    def write(self, batches: Iterator[pa.RecordBatch]) -> tuple[list[str], int]:
        """Write ``batches`` as uncommitted fragments (executor side).

        Returns:
            The fragments' metadata as JSON strings (none for no rows) and the rows written.
        """
        rows = 0

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal rows
            for batch in batches:
                rows += batch.num_rows
                yield batch

        stream = counted()
        first = next(stream, None)
        if first is None:
            return [], 0

        def chained() -> Iterator[pa.RecordBatch]:
            yield first
            yield from stream

        written = fragments.write_fragment_files(
            chained(), self.uri, self.schema, self.storage, max_rows_per_file=self.rows_per_file
        )
        return written, rows


class FragmentTask:
    """The executor half: a picklable callable for ``DataFrame.mapInArrow``.

    Subclasses set :attr:`sink` and implement :meth:`rows`. Spark calls the task once per
    partition with that partition's batches; the task writes what :meth:`rows` yields and
    returns one :data:`RESULT_SCHEMA` row (no row for an empty partition).
    """

    sink: FragmentSink

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """Turn the partition's input into output rows; record statistics in ``stats``.

        ``stats["order"]`` (an int) orders the tasks' fragments in the commit: rows appear
        in the dataset in that order.
        """
        raise NotImplementedError

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Write this partition's rows; yield its one result row (none if it had no input)."""
        stats: dict[str, Any] = {}
        written, rows = self.sink.write(self.rows(batches, stats))
        if not rows and not stats:
            return
        order = int(stats.pop("order", 0))
        yield pa.RecordBatch.from_pydict(
            {
                "order": [order],
                "rows": [rows],
                "fragments": [json.dumps(written)],
                "stats": [json.dumps(stats)],
            },
            schema=RESULT_SCHEMA,
        )


@dataclass(frozen=True)
class WrittenFragments:
    """What a fragment job wrote, not yet committed (driver side).

    Attributes:
        fragments: Fragment metadata JSON strings, in task order.
        rows: Rows written by all tasks.
        stats: Each task's statistics, in task order.
    """

    fragments: list[str]
    rows: int
    stats: list[dict[str, Any]]

    def total(self, key: str) -> int:
        """The sum of one numeric statistic over all tasks."""
        return sum(int(s.get(key, 0)) for s in self.stats)

    def check_rows(self, expected: int, what: str) -> None:
        """Refuse to commit a job that wrote another number of rows than planned.

        Raises:
            RuntimeError: ``rows != expected``; names ``what`` the rows were for.
        """
        if self.rows != expected:
            raise RuntimeError(
                f"the Spark job wrote {self.rows} rows for {expected} {what}; nothing was "
                "committed (the previous version stays current)"
            )

    @classmethod
    def from_results(cls, results: Sequence[dict[str, Any]]) -> WrittenFragments:
        """Gather the result rows of :meth:`FragmentTask.__call__`, ordered by ``order``."""
        ordered = sorted(results, key=lambda r: r["order"])
        return cls(
            fragments=[f for r in ordered for f in json.loads(r["fragments"])],
            rows=sum(int(r["rows"]) for r in ordered),
            stats=[{"order": r["order"], **json.loads(r["stats"])} for r in ordered],
        )


def run_fragment_job(df: Any, task: FragmentTask) -> WrittenFragments:
    """Run ``task`` over every partition of ``df`` and gather what the tasks wrote.

    Only the tasks' result rows (fragment metadata and statistics) reach the driver.
    """
    rows = df.mapInArrow(task, RESULT_DDL).collect()
    return WrittenFragments.from_results([r.asDict() for r in rows])
