"""bounded_parallel_map: order, bounded look-ahead, error propagation, argument checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from vlm_lake.util.parallel import bounded_parallel_map


def test_preserves_input_order_with_uneven_work() -> None:
    def fn(i: int) -> int:
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        return i * i

    out = list(bounded_parallel_map(fn, range(40), workers=4, max_in_flight=8))
    assert out == [i * i for i in range(40)]


def test_single_worker_and_empty_input() -> None:
    assert list(bounded_parallel_map(str, [3, 1, 2], workers=1)) == ["3", "1", "2"]
    assert list(bounded_parallel_map(str, [], workers=3)) == []


def test_consumes_input_lazily() -> None:
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for i in range(1_000_000):
            pulled.append(i)
            yield i

    gen = bounded_parallel_map(lambda x: x + 1, source(), workers=2, max_in_flight=4)
    assert [next(gen) for _ in range(3)] == [1, 2, 3]
    gen.close()
    assert len(pulled) <= 3 + 4


def test_never_more_than_max_in_flight_submitted_but_unconsumed() -> None:
    workers, window, n = 3, 5, 40
    lock = threading.Lock()
    started = 0
    consumed = 0
    max_started_ahead = 0
    pulled = 0
    max_pulled_ahead = 0

    def source() -> Iterator[int]:
        nonlocal pulled, max_pulled_ahead
        for i in range(n):
            pulled += 1  # runs on the consumer's thread: deterministic
            max_pulled_ahead = max(max_pulled_ahead, pulled - consumed)
            yield i

    def fn(i: int) -> int:
        nonlocal started, max_started_ahead
        with lock:
            started += 1
            max_started_ahead = max(max_started_ahead, started - consumed)
        return -i

    results = []
    for value in bounded_parallel_map(fn, source(), workers=workers, max_in_flight=window):
        with lock:
            consumed += 1
        results.append(value)
        time.sleep(0.003)  # a slow consumer lets the workers run ahead as far as allowed
    assert results == [-i for i in range(n)]
    assert started == n
    assert max_started_ahead <= window
    assert max_pulled_ahead == window  # the window is used, and never exceeded


def test_default_window_is_four_times_workers() -> None:
    pulled = 0
    consumed = 0
    max_ahead = 0

    def source() -> Iterator[int]:
        nonlocal pulled, max_ahead
        for i in range(50):
            pulled += 1
            max_ahead = max(max_ahead, pulled - consumed)
            yield i

    for _ in bounded_parallel_map(lambda x: x, source(), workers=2):
        consumed += 1
    assert consumed == 50
    assert max_ahead == 8


def test_propagates_exception_from_fn() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        with lock:
            calls.append(i)
        if i == 3:
            raise KeyError(f"bad item {i}")
        return i

    got: list[int] = []
    with pytest.raises(KeyError, match="bad item 3"):
        for value in bounded_parallel_map(fn, range(10_000), workers=2, max_in_flight=4):
            got.append(value)
    assert got == [0, 1, 2]
    assert max(calls) < 3 + 4 + 1  # nothing far beyond the window was started
    assert len(calls) < 10


def test_exception_on_first_item_stops_early() -> None:
    calls: list[int] = []

    def fn(i: int) -> int:
        calls.append(i)
        raise RuntimeError(f"failed on {i}")

    with pytest.raises(RuntimeError, match="failed on 0"):
        list(bounded_parallel_map(fn, range(100), workers=1, max_in_flight=2))
    assert calls[0] == 0
    assert len(calls) <= 2


@pytest.mark.parametrize("workers", [0, -1])
def test_rejects_workers_below_one(workers: int) -> None:
    with pytest.raises(ValueError, match=rf"workers={workers} must be at least 1"):
        list(bounded_parallel_map(lambda x: x, [1, 2], workers=workers))


def test_rejects_window_smaller_than_workers() -> None:
    with pytest.raises(ValueError, match=r"max_in_flight=2 must be at least workers=4"):
        list(bounded_parallel_map(lambda x: x, [1, 2], workers=4, max_in_flight=2))
