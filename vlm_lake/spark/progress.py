"""A progress log for long Spark jobs, from the driver's status tracker.

A Spark action such as ``collect`` blocks until the last task ends. :class:`SparkProgress`
polls ``SparkContext.statusTracker()`` from a background thread meanwhile and logs how many
tasks of the active stages are done, so a user watching the Dagster log of a long run
sees it advance. Under Spark Connect there is no status tracker on the client; the log
then only says when the job starts and ends.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from vlm_lake.spark.session import spark_context

log = logging.getLogger(__name__)


class SparkProgress:
    """Log ``what: done/total tasks`` every ``interval_s`` seconds while a job runs.

    Args:
        spark: The SparkSession running the job.
        what: What the job does, e.g. ``image_features``.
        items: Work items (images...) in the whole job, to estimate items done.
        interval_s: Seconds between two log lines.
        logger: Where to log (the caller's logger).

    Use as a context manager around the action.
    """

    def __init__(
        self,
        spark: Any,
        what: str,
        items: int,
        interval_s: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s={interval_s!r} must be a number of seconds > 0")
        self.what = what
        self.items = items
        self.interval_s = interval_s
        self.log = logger or log
        self.started = time.perf_counter()
        self.done_tasks = 0
        self.total_tasks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        sc = spark_context(spark)
        self._tracker: Any = sc.statusTracker() if sc is not None else None
        if self._tracker is None:
            self.log.debug("%s: Spark Connect has no status tracker; progress is not logged", what)

    def poll(self) -> tuple[int, int]:
        """``(done, total)`` tasks of the active stages (0, 0 when none is active)."""
        if self._tracker is None:
            return 0, 0
        done = total = 0
        for stage_id in self._tracker.getActiveStageIds():
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        if total:
            self.done_tasks, self.total_tasks = done, total
        return done, total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            done, total = self.poll()
            if not total:
                continue
            elapsed = time.perf_counter() - self.started
            approx = self.items * done // total
            self.log.info(
                "%s: %d/%d tasks done (about %d/%d items), %.0f s elapsed",
                self.what,
                done,
                total,
                approx,
                self.items,
                elapsed,
            )

    def __enter__(self) -> SparkProgress:
        self.started = time.perf_counter()
        self.log.info("%s: started on Spark, %d items", self.what, self.items)
        if self._tracker is not None:
            self._thread = threading.Thread(target=self._run, name=f"progress-{self.what}")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elapsed = time.perf_counter() - self.started
        outcome = "failed" if exc_type is not None else "finished"
        self.log.info("%s: %s after %.1f s", self.what, outcome, elapsed)
