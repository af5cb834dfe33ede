"""Random access to image bytes: ``image_lance`` vs the same table in Parquet and plain files.

The service-style question: give me these 100 (or 1,000) images, by row or by
``image_id``. Four copies of the same images answer it:

* ``image_lance`` as the pipeline wrote it (:meth:`~benchmarks.common.Context.lake`, read
  at its published version): ``reads.take_rows`` by row (a sorted ``take``, in threaded
  chunks over 250 rows); a filter on ``image_id`` (which has a BTREE index) by id;
* **Spark-style Parquet**: the table as Spark writes it, snappy-compressed with
  ``parquet.block.size`` = 128 MB row groups (``pq.write_table(row_group_size=rows per
  128 MB)``). It is one file: a Spark job writes one such file per task, and more files
  only add more footers to read, so one file is Parquet's best case;
* **pyarrow-default Parquet**: ``pq.write_table(table, path)`` (snappy, row groups of up
  to 1Mi rows, i.e. one row group for this data);
* **plain files**: the generated JPEGs, one file per image, read with ``open().read()``.

Parquet cannot read one row: the reader finds the row groups that hold the wanted rows
from the footer (opened once and kept, like an open Lance dataset) and decodes those
groups' ``image_data`` pages. The fastest of ``ParquetFile.read_row_groups`` + ``take`` and
``pyarrow.dataset.Dataset.take`` counts. Lookups by id use a ``pyarrow.dataset`` filter,
which skips row groups by their min/max statistics (the ids are sorted, so that works).

Everything is warm: every file is read once before timing so the page cache holds it, and
each method's bytes are checked against image_lance's before any timing (which also warms
the readers). Then each measurement runs once more untimed and the best of five counts;
one whose run takes over a second (Parquet decoding whole row groups) is timed once.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.common import MB, Context, MiB, Row, best_of, row, timed
from vlm_lake.tables import publish, reads
from vlm_lake.tables.lance_io import sql_string_list

log = logging.getLogger(__name__)

#: Spark's ``parquet.block.size``: the row-group size of Parquet files Spark writes.
SPARK_ROW_GROUP_BYTES = 128 * MiB
#: Parquet lookups by id timed one at a time (each decodes a whole row group: 128 MB, or the
#: whole table with pyarrow's defaults); the time is scaled to the 100 of the others.
PARQUET_LOOKUPS = 10


#: A measurement whose first run takes longer than this is not repeated (the page cache
#: is already warm, and a one-second read has no cache left to warm).
LONG_S = 1.0


def warm(fn: Any, repeats: int = 5, long_s: float = LONG_S) -> float:
    """Seconds of ``fn``, warm: the best of ``repeats`` runs after an untimed one.

    A first run longer than ``long_s`` is the answer itself (a long read is not helped by
    warmer caches, and repeating it would make the section slow), so the slow baselines
    (Parquet decoding whole row groups) run once.
    """
    first = timed(fn)[1]
    if first > long_s:
        return first
    return best_of(fn, repeats)


def read_all(paths: list[Path]) -> int:
    """Read every file once (into the page cache); return the bytes read."""
    return sum(len(p.read_bytes()) for p in paths)


class ParquetCopy:
    """One Parquet file of the image table, opened once, read by row and by id."""

    def __init__(self, path: Path) -> None:
        import numpy as np
        import pyarrow.dataset as pds
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        self.row_groups = meta.num_row_groups
        self.starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(self.row_groups)])
        self.dataset = pds.dataset(path, format="parquet")

    def take_row_groups(self, positions: list[int]) -> list[bytes]:
        """Decode the row groups holding ``positions``, then pick the rows."""
        import numpy as np

        pos = np.asarray(positions)
        group_of = np.searchsorted(self.starts, pos, side="right") - 1
        groups = sorted(set(group_of.tolist()))
        table = self.file.read_row_groups(groups, columns=["image_data"])
        offsets, at = {}, 0
        for g in groups:
            offsets[g] = at
            at += int(self.starts[g + 1] - self.starts[g])
        local = [offsets[g] + int(p - self.starts[g]) for g, p in zip(group_of, pos, strict=True)]
        return table.column("image_data").take(local).to_pylist()

    def take_dataset(self, positions: list[int]) -> list[bytes]:
        """``pyarrow.dataset.Dataset.take``."""
        return self.dataset.take(positions, columns=["image_data"]).column(0).to_pylist()

    def lookup(self, image_id: str) -> bytes:
        """One row by id: a filter that skips row groups by their statistics."""
        import pyarrow.compute as pc

        table = self.dataset.to_table(
            columns=["image_data"], filter=pc.field("image_id") == image_id
        )
        return table.column(0)[0].as_py()

    def lookup_many(self, ids: list[str]) -> list[bytes]:
        """Several rows by id in one query (an IN list)."""
        import pyarrow.compute as pc

        table = self.dataset.to_table(
            columns=["image_id", "image_data"], filter=pc.field("image_id").isin(ids)
        )
        return table.column("image_data").to_pylist()


def write_parquet(table: pa.Table, work: Path) -> tuple[ParquetCopy, ParquetCopy]:
    """Write the Spark-style and the pyarrow-default Parquet copies of ``table``."""
    import pyarrow.parquet as pq

    row_bytes = table.nbytes / max(1, table.num_rows)
    spark_rows = max(1, int(SPARK_ROW_GROUP_BYTES / row_bytes))
    spark_path, default_path = work / "images-spark.parquet", work / "images-pyarrow.parquet"
    pq.write_table(table, spark_path, row_group_size=spark_rows, compression="snappy")
    pq.write_table(table, default_path)
    spark, default = ParquetCopy(spark_path), ParquetCopy(default_path)
    log.info(
        "parquet: spark-style %d row groups of %d rows (%.0f MB), pyarrow default %d row groups",
        spark.row_groups,
        spark_rows,
        spark_path.stat().st_size / MB,
        default.row_groups,
    )
    return spark, default


def _check_same(name: str, got: list[bytes], expected: list[bytes]) -> None:
    if got != expected:
        raise AssertionError(f"{name} returned other bytes than image_lance")


def _by_row(
    ds: Any, parquets: dict[str, ParquetCopy], files: list[Path], positions: list[int]
) -> list[Row]:
    expected = reads.take_rows(ds, positions, ["image_data"]).column(0).to_pylist()
    _check_same("plain files", [files[p].read_bytes() for p in positions], expected)
    ours = warm(lambda: reads.take_rows(ds, positions, ["image_data"]))
    rows: list[Row] = []
    k = len(positions)
    for name, pq_copy in parquets.items():
        _check_same(name, pq_copy.take_row_groups(positions), expected)
        _check_same(name, pq_copy.take_dataset(positions), expected)
        by_groups = warm(lambda c=pq_copy: c.take_row_groups(positions))
        by_take = warm(lambda c=pq_copy: c.take_dataset(positions))
        how = "read_row_groups" if by_groups <= by_take else "Dataset.take"
        rows.append(
            row(
                f"{k} random rows: image_lance vs {name} ({pq_copy.row_groups} row groups, {how})",
                ours,
                min(by_groups, by_take),
                "s",
                higher=False,
            )
        )
    plain = warm(lambda: [files[p].read_bytes() for p in positions])
    rows.append(
        row(
            f"{k} random rows: image_lance vs plain files (page cache)",
            ours,
            plain,
            "s",
            higher=False,
        )
    )
    return rows


def _by_id(
    ds: Any, parquets: dict[str, ParquetCopy], files_by_id: dict[str, Path], ids: list[str]
) -> list[Row]:
    def lance_one(image_id: str) -> bytes:
        table = ds.to_table(
            columns=["image_data"], filter=f"image_id = {sql_string_list([image_id])}"
        )
        return table.column(0)[0].as_py()

    def lance_many() -> list[bytes]:
        table = ds.to_table(
            columns=["image_id", "image_data"], filter=f"image_id IN ({sql_string_list(ids)})"
        )
        return table.column("image_data").to_pylist()

    expected = [lance_one(i) for i in ids]
    _check_same("plain files", [files_by_id[i].read_bytes() for i in ids], expected)
    one_ours = warm(lambda: [lance_one(i) for i in ids])
    many_ours = warm(lance_many)
    k = len(ids)
    rows: list[Row] = []
    for name, pq_copy in parquets.items():
        some = ids[:PARQUET_LOOKUPS]
        _check_same(name, [pq_copy.lookup(i) for i in some], expected[: len(some)])
        _check_same(name, sorted(pq_copy.lookup_many(ids)), sorted(expected))
        # each lookup decodes a whole row group: time some, scale to all (said in the label)
        one = warm(lambda c=pq_copy, some=some: [c.lookup(i) for i in some]) * k / len(some)
        many = warm(lambda c=pq_copy: c.lookup_many(ids))
        rows += [
            row(
                f"{k} lookups by image_id, one at a time: image_lance vs {name} "
                f"({len(some)} timed, x{k // len(some)})",
                one_ours,
                one,
                "s",
                higher=False,
            ),
            row(
                f"{k} ids in one IN-list query: image_lance vs {name}",
                many_ours,
                many,
                "s",
                higher=False,
            ),
        ]
    plain = warm(lambda: [files_by_id[i].read_bytes() for i in ids])
    rows.append(
        row(
            f"{k} lookups by image_id, one at a time: image_lance vs plain files (page cache)",
            one_ours,
            plain,
            "s",
            higher=False,
        )
    )
    return rows


def run(ctx: Context) -> list[Row]:
    """Measure random rows and id lookups on every copy; return the rows."""
    lake = ctx.lake()
    data = ctx.data()
    ds = publish.open_published(lake.images)
    table = ds.to_table()
    table = table.cast(pa.schema([pa.field(f.name, f.type, f.nullable) for f in table.schema]))
    work = ctx.work / "access"
    work.mkdir(parents=True, exist_ok=True)
    spark, default = write_parquet(table, work)
    parquets = {"Spark-style Parquet": spark, "pyarrow-default Parquet": default}
    ids = table.column("image_id").to_pylist()
    files_by_id = {i: data.images / f"{i}.jpg" for i in ids}
    files = [files_by_id[i] for i in ids]  # aligned with image_lance's row positions
    lance_files = [p for p in Path(lake.images).rglob("*") if p.is_file()]
    cached = read_all([*files, *lance_files, spark.path, default.path])
    log.info("access: %.0f MB read into the page cache", cached / MB)

    n = table.num_rows
    rng = random.Random(0)
    rows: list[Row] = []
    for k in (100, 1000):
        rows += _by_row(ds, parquets, files, rng.sample(range(n), min(k, n)))
    rows += _by_id(ds, parquets, files_by_id, rng.sample(ids, min(100, n)))
    return rows
