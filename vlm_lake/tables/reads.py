"""Reading rows of large values: random rows by position, and whole tables in ranges.

Image bytes are large values: Lance reads them best as sorted ``take`` calls of bounded
size, and scans of them must be ranged to keep memory bounded. The reasons and the
measurements are in docs/layout.md and docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import lance


#: :func:`take_rows` reads more distinct positions than this as several ``take`` calls of
#: this many rows, run in threads (Lance's take releases the GIL).
TAKE_CHUNK_ROWS = 250
#: At most this many threads per :func:`take_rows` call (and at least 2).
TAKE_THREADS = 8


def take_rows(ds: lance.LanceDataset, positions: Sequence[int], columns: list[str]) -> pa.Table:
    """Rows at ``positions`` (any order, repeats allowed), returned in that order.

    Lance reads a sorted, de-duplicated ``take`` several times faster than the same
    positions in random order, so the positions are sorted for the read and the result is
    put back in the caller's order afterwards. A single ``take`` grows faster than its row
    count, so more than :data:`TAKE_CHUNK_ROWS` positions are read as consecutive chunks
    of that many, in threads (one per core, 2 to :data:`TAKE_THREADS`). Measured in
    docs/benchmarks.md ("Random access").

    Args:
        ds: The dataset (pinned to a version).
        positions: Row positions, as a DataLoader's sampler or a join hands them out.
        columns: Columns to read.

    Returns:
        A table with one row per entry of ``positions``.
    """
    wanted = sorted(set(positions))
    if len(wanted) > TAKE_CHUNK_ROWS:
        chunks = [wanted[i : i + TAKE_CHUNK_ROWS] for i in range(0, len(wanted), TAKE_CHUNK_ROWS)]
        threads = min(len(chunks), TAKE_THREADS, max(2, os.cpu_count() or 2))
        with ThreadPoolExecutor(threads, thread_name_prefix="take_rows") as pool:
            table = pa.concat_tables(pool.map(lambda c: ds.take(c, columns=columns), chunks))
    else:
        table = ds.take(wanted, columns=columns)
    if wanted == list(positions):
        return table
    where = {p: i for i, p in enumerate(wanted)}
    return table.take(pa.array([where[p] for p in positions], pa.int64()))


#: Rows per range of :func:`read_ranges` (about 14 MB of typical photos).
RANGE_ROWS = 256


def read_ranges(
    source: Any,
    columns: list[str],
    rows: int = RANGE_ROWS,
    *,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """All rows of a dataset or fragment, in order, read one range of ``rows`` at a time.

    Use it instead of ``to_batches`` for columns of large values (image bytes). Lance 14
    reads such a column (full-zip pages) far ahead of a plain scan whatever its
    ``io_buffer_size``, ``batch_readahead`` or ``fragment_readahead``, so a scan's memory
    grows with the table; ranged reads keep it bounded and are faster too (docs/layout.md,
    measured in docs/benchmarks.md).

    Args:
        source: A ``LanceDataset`` (pinned to a version) or a ``LanceFragment``.
        columns: Columns to read.
        rows: Rows per range, and at most per batch (a positive number).
        start: First row to read.
        stop: Row to stop before (default: the end).

    Yields:
        Record batches of at most ``rows`` rows, together rows ``[start, stop)`` of the
        source in row order.
    """
    if rows < 1:
        raise ValueError(f"rows={rows!r} must be a positive number of rows per range")
    total = source.count_rows() if stop is None else stop
    for offset in range(start, total, rows):
        yield from source.to_batches(
            columns=columns, offset=offset, limit=min(rows, total - offset), batch_size=rows
        )
