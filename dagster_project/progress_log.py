"""A Dagster logger for terminals: one line per finished step, warnings and errors once.

The quick start runs with this logger instead of Dagster's console logger, which prints
every event (about a hundred lines for four images). The full log is still recorded in
the Dagster instance (``make dev`` shows it), and ``--verbose`` brings the console back.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from dagster import InitLoggerContext, logger

#: Dagster events that end a step, and how the line calls them.
_STEP_ENDS = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}


class StepLines(logging.Handler):
    """Writes ``[n/N] step done in 1.2 s: assets`` per step, and each warning once.

    Args:
        steps: How many steps the run has (for ``n/N``).
        stream: Where to write (standard output).
    """

    def __init__(self, steps: int, stream: TextIO | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.steps = steps
        self.stream = stream or sys.stdout
        self.finished = 0
        self.started: dict[str, float] = {}
        self.assets: dict[str, list[str]] = {}
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        """Turn one Dagster log record into at most one line."""
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or ""
        if event is None:
            if record.levelno >= logging.WARNING:
                self._once(f"  {record.levelname.lower()}: {step}: {meta.get('orig_message')}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.perf_counter()
        elif kind == "ASSET_MATERIALIZATION":
            self.assets.setdefault(step, []).append(event.asset_key.to_user_string())
        elif kind in _STEP_ENDS:
            self.finished += 1
            seconds = time.perf_counter() - self.started.get(step, time.perf_counter())
            what = ", ".join(self.assets.get(step, [])) or "nothing materialized"
            line = f"[{self.finished}/{self.steps}] {step} {_STEP_ENDS[kind]} in {seconds:.1f} s"
            self._once(f"{line}: {what}")
            if kind == "STEP_FAILURE" and event.step_failure_data.error is not None:
                self._once(f"  error: {event.step_failure_data.error.message.strip()}")

    def _once(self, line: str) -> None:
        if line not in self.seen:
            self.seen.add(line)
            self.stream.write(line + "\n")
            self.stream.flush()


def step_lines_logger(steps: int) -> Any:
    """A Dagster logger definition writing :class:`StepLines` for a run of ``steps`` steps."""

    @logger(description="One line per finished step; warnings and errors once.")
    def step_lines(_init_context: InitLoggerContext) -> logging.Logger:
        log = logging.Logger("vlm_lake.steps", logging.DEBUG)
        log.addHandler(StepLines(steps))
        return log

    return step_lines
