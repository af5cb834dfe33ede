"""reads.take_rows: sorted reads, results in the caller's order."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa

from vlm_lake.tables import reads


def test_take_rows_keeps_the_callers_order_and_repeats(tmp_path: Path) -> None:
    table = pa.table({"id": list(range(50)), "data": [bytes([i]) * (i + 1) for i in range(50)]})
    ds = lance.write_dataset(table, str(tmp_path / "t.lance"), max_rows_per_file=16)
    positions = [42, 3, 17, 3, 49, 0, 16]
    got = reads.take_rows(ds, positions, ["id", "data"])
    assert got.column("id").to_pylist() == positions
    assert got.column("data").to_pylist() == [bytes([p]) * (p + 1) for p in positions]
    assert reads.take_rows(ds, [1, 2, 3], ["id"]).column("id").to_pylist() == [1, 2, 3]
    assert reads.take_rows(ds, [], ["id"]).num_rows == 0


def test_take_rows_over_the_chunk_size_reads_in_threads_same_rows(tmp_path: Path) -> None:
    n = 3 * reads.TAKE_CHUNK_ROWS + 17
    table = pa.table({"id": list(range(n)), "data": [i.to_bytes(3, "big") * 5 for i in range(n)]})
    ds = lance.write_dataset(table, str(tmp_path / "t.lance"), max_rows_per_file=300)
    positions = [(i * 7919) % n for i in range(n)] + [5, n - 1, 5]  # every row, shuffled, repeats
    got = reads.take_rows(ds, positions, ["id", "data"])
    assert got.column("id").to_pylist() == positions
    assert got.column("data").to_pylist() == [p.to_bytes(3, "big") * 5 for p in positions]
    in_order = reads.take_rows(ds, list(range(n)), ["id"])
    assert in_order.column("id").to_pylist() == list(range(n))
