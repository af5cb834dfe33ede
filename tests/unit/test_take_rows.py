"""lance_io.take_rows: sorted reads, results in the caller's order."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa

from vlm_lake import lance_io


def test_take_rows_keeps_the_callers_order_and_repeats(tmp_path: Path) -> None:
    table = pa.table({"id": list(range(50)), "data": [bytes([i]) * (i + 1) for i in range(50)]})
    ds = lance.write_dataset(table, str(tmp_path / "t.lance"), max_rows_per_file=16)
    positions = [42, 3, 17, 3, 49, 0, 16]
    got = lance_io.take_rows(ds, positions, ["id", "data"])
    assert got.column("id").to_pylist() == positions
    assert got.column("data").to_pylist() == [bytes([p]) * (p + 1) for p in positions]
    assert lance_io.take_rows(ds, [1, 2, 3], ["id"]).column("id").to_pylist() == [1, 2, 3]
    assert lance_io.take_rows(ds, [], ["id"]).num_rows == 0
