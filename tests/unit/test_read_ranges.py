"""reads.read_ranges: a whole dataset or fragment, in order, a range of rows at a time."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pytest

from vlm_lake.tables.reads import read_ranges


@pytest.fixture()
def dataset(tmp_path: Path) -> lance.LanceDataset:
    """1000 rows of distinct bytes in 3 files (400, 400, 200), rows 10..19 and 450 deleted."""
    table = pa.table(
        {
            "id": pa.array(range(1000), pa.int64()),
            "data": pa.array([i.to_bytes(4, "big") * (i % 7 + 1) for i in range(1000)]),
        }
    )
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(table, uri, max_rows_per_file=400)
    ds = lance.dataset(uri)
    ds.delete("id >= 10 AND id < 20 OR id = 450")
    return lance.dataset(uri)


@pytest.mark.parametrize("rows", [1, 64, 256, 999, 5000])
def test_a_dataset_comes_back_whole_in_order(dataset: lance.LanceDataset, rows: int) -> None:
    batches = list(read_ranges(dataset, ["id", "data"], rows))
    assert all(0 < b.num_rows <= rows for b in batches)
    got = pa.Table.from_batches(batches)
    assert got.equals(dataset.to_table(columns=["id", "data"]))
    assert got.num_rows == 989 and 450 not in got.column("id").to_pylist()


def test_a_fragment_comes_back_whole_in_order(dataset: lance.LanceDataset) -> None:
    fragment = dataset.get_fragments()[1]  # rows 400..799, 450 deleted
    got = pa.Table.from_batches(list(read_ranges(fragment, ["data", "id"], 64)))
    assert got.column("id").to_pylist() == [i for i in range(400, 800) if i != 450]
    assert got.equals(fragment.to_table(columns=["data", "id"]))


def test_rows_must_be_positive(dataset: lance.LanceDataset) -> None:
    with pytest.raises(ValueError, match="rows=0"):
        next(read_ranges(dataset, ["id"], 0))
