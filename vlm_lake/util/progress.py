"""A rate-limited progress logger for long loops."""

from __future__ import annotations

import logging
import time


class Progress:
    """Log ``done``, bytes and rates at most every ``interval`` seconds, and once at the end.

    Args:
        logger: Where to log.
        what: Noun for the items (``images``, ``documents``).
        interval: Minimum seconds between two log lines.
    """

    def __init__(self, logger: logging.Logger, what: str, interval: float = 5.0) -> None:
        self.logger, self.what, self.interval = logger, what, interval
        self.count = 0
        self.nbytes = 0
        self.start = time.perf_counter()
        self._last = self.start

    def update(self, count: int = 1, nbytes: int = 0) -> None:
        """Record progress; logs if ``interval`` seconds passed since the last line."""
        self.count += count
        self.nbytes += nbytes
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._log("progress")

    @property
    def seconds(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def done(self) -> None:
        """Log the final totals."""
        self._log("done")

    def _log(self, stage: str) -> None:
        secs = max(self.seconds, 1e-9)
        self.logger.info(
            "%s: %d %s, %.1f MB in %.1fs (%.1f %s/s, %.1f MB/s)",
            stage,
            self.count,
            self.what,
            self.nbytes / 1e6,
            secs,
            self.count / secs,
            self.what,
            self.nbytes / 1e6 / secs,
        )
