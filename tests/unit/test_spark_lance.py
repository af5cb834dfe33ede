"""The Spark data source for Lance: partitions = fragments, column selection, write paths."""

from __future__ import annotations

from typing import Any

import lance
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from vlm_lake.spark.lance_source import read_lance, storage_options_to_spark, write_lance


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": [f"row{i:04d}" for i in range(start, start + n)],
            "value": list(range(start, start + n)),
            "payload": [bytes([i % 256]) * (i % 7 + 1) for i in range(start, start + n)],
        }
    )


def test_one_partition_per_fragment_and_positions(spark: Any, tmp_path) -> None:
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(_table(10), uri, max_rows_per_file=3)  # fragments of 3,3,3,1
    assert len(lance.dataset(uri).get_fragments()) == 4

    df = read_lance(spark, uri, with_position=True)
    assert df.rdd.getNumPartitions() == 4
    rows = sorted(df.collect(), key=lambda r: r["_rowpos"])
    assert [r["_rowpos"] for r in rows] == list(range(10))
    assert [r["id"] for r in rows] == [f"row{i:04d}" for i in range(10)]
    # positions are what LanceDataset.take understands
    taken = lance.dataset(uri).take([r["_rowpos"] for r in rows[5:8]]).column("id").to_pylist()
    assert taken == [r["id"] for r in rows[5:8]]


def test_columns_option_reads_only_those_columns(spark: Any, tmp_path) -> None:
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(_table(5), uri)
    df = read_lance(spark, uri, columns=["value"])
    assert df.columns == ["value"]
    assert sorted(r["value"] for r in df.collect()) == [0, 1, 2, 3, 4]
    with pytest.raises(Exception, match="nope"):
        read_lance(spark, uri, columns=["value", "nope"]).collect()


def test_write_then_read_back_append_and_overwrite(spark: Any, tmp_path) -> None:
    uri = str(tmp_path / "out.lance")
    src = spark.createDataFrame(_table(20).to_pandas()).repartition(3)
    write_lance(src, uri)
    ds = lance.dataset(uri)
    assert ds.version == 1
    assert ds.count_rows() == 20
    assert len(ds.get_fragments()) == 3  # one fragment per task, one commit
    got = ds.to_table().sort_by("value")
    assert got.column("payload").to_pylist() == _table(20).column("payload").to_pylist()

    write_lance(spark.createDataFrame(_table(5, start=100).to_pandas()), uri, mode="append")
    ds = lance.dataset(uri)
    assert (ds.version, ds.count_rows()) == (2, 25)

    write_lance(spark.createDataFrame(_table(2).to_pandas()), uri, mode="overwrite")
    ds = lance.dataset(uri)
    assert (ds.version, ds.count_rows()) == (3, 2)
    assert lance.dataset(uri, version=2).count_rows() == 25  # time travel still works

    read = read_lance(spark, uri, version=2)
    assert read.count() == 25


def test_failed_write_commits_nothing(spark: Any, tmp_path) -> None:
    uri = str(tmp_path / "out.lance")
    write_lance(spark.createDataFrame(_table(4).to_pandas()), uri)

    @F.udf("long")
    def explode_on_three(v: int) -> int:
        if v == 3:
            raise ValueError("boom on purpose")
        return v

    bad = spark.createDataFrame(_table(6).to_pandas()).withColumn(
        "value", explode_on_three(F.col("value"))
    )
    with pytest.raises(Exception, match="boom on purpose"):
        write_lance(bad, uri, mode="overwrite")
    ds = lance.dataset(uri)
    assert (ds.version, ds.count_rows()) == (1, 4)


def test_read_and_write_on_s3(spark: Any, s3_store, bucket: str) -> None:
    uri = f"s3://{bucket}/spark/t.lance"
    opts = s3_store.storage_options(uri)
    lance.write_dataset(_table(7), uri, max_rows_per_file=4, storage_options=opts)
    df = read_lance(spark, uri, storage_options=opts, columns=["id", "value"])
    assert df.rdd.getNumPartitions() == 2
    out = f"s3://{bucket}/spark/copy.lance"
    write_lance(df.filter("value % 2 = 0"), out, storage_options=opts)
    copy = lance.dataset(out, storage_options=opts)
    assert sorted(copy.to_table().column("value").to_pylist()) == [0, 2, 4, 6]


def test_secrets_are_redacted_in_plans(spark: Any, s3_store, bucket: str) -> None:
    uri = f"s3://{bucket}/spark/t.lance"
    opts = s3_store.storage_options(uri)
    lance.write_dataset(_table(2), uri, storage_options=opts)
    encoded = storage_options_to_spark(opts)
    assert encoded["storage.aws_secret_access_key"] == opts["aws_secret_access_key"]
    df = read_lance(spark, uri, storage_options=opts)
    plan = df._jdf.queryExecution().toString()
    assert opts["aws_secret_access_key"] not in plan
