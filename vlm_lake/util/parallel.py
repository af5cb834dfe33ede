"""Bounded, order-preserving parallel map over an iterator (for I/O-bound work)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_parallel_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, max_in_flight: int | None = None
) -> Iterator[R]:
    """Apply ``fn`` to ``items`` on a thread pool, yielding results in input order.

    Unlike ``ThreadPoolExecutor.map``, the input is consumed lazily and at most
    ``max_in_flight`` results are held at once, so memory stays bounded for any input size.
    If ``fn`` raises, the error propagates and the not-yet-started work is cancelled.

    Args:
        fn: The function to apply.
        items: Any iterable, consumed lazily.
        workers: Number of threads (at least 1).
        max_in_flight: Upper bound on submitted-but-unconsumed items (default 4 x workers).

    Yields:
        ``fn(item)`` for each item, in order.
    """
    if workers < 1:
        raise ValueError(f"workers={workers!r} must be at least 1")
    window = max_in_flight or 4 * workers
    if window < workers:
        raise ValueError(f"max_in_flight={max_in_flight!r} must be at least workers={workers}")
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlm-lake-io") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
