"""A Spark Python data source for Lance (``spark.read.format("lance")``), PySpark 4.

No connector jar can be downloaded everywhere we run, so Lance is read and written from
Spark's Python workers:

* **Read**: one input partition per Lance fragment, at a version pinned when the read is
  planned; each partition yields Arrow record batches. Spark does not push column pruning
  into Python sources, so the ``columns`` option selects the columns read from disk. The
  ``with_position`` option adds ``_rowpos``, the row's position in that version, which
  ``LanceDataset.take`` accepts: this is how the join fetches image bytes by position.
* **Write**: every task writes its rows as uncommitted Lance fragments and returns their
  metadata; the driver commits them all in one Lance transaction (``overwrite`` or
  ``append``). A failed job commits nothing, so readers keep the previous version.

Options (all strings): ``path`` (via ``load``/``save``), ``columns`` (comma-separated),
``version``, ``with_position`` (``true``/``false``), ``batch_size``,
``max_rows_per_file``, and ``storage.<key>`` for each Lance storage option (keys such as
``storage.aws_secret_access_key`` match Spark's redaction pattern, so they are masked in
plans and the UI).

``lance`` is imported only inside the methods that run in workers or on the driver at
plan time, never at module import, because Lance is not fork-safe and Spark's Python
daemon forks its workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from vlm_lake.spark.fragment_job import FragmentSink

log = logging.getLogger(__name__)

FORMAT_NAME = "lance"
POSITION_COLUMN = "_rowpos"
_STORAGE_PREFIX = "storage."


def storage_options_to_spark(storage_options: dict[str, str]) -> dict[str, str]:
    """Encode Lance storage options as data source options (``storage.<key>``)."""
    return {f"{_STORAGE_PREFIX}{k}": v for k, v in storage_options.items()}


def _storage_options(options: Any) -> dict[str, str]:
    return {
        k[len(_STORAGE_PREFIX) :]: v for k, v in options.items() if k.startswith(_STORAGE_PREFIX)
    }


def _path(options: Any) -> str:
    path = options.get("path")
    if not path:
        raise ValueError(
            "the lance data source needs a dataset URI: use .load(uri) / .save(uri) or "
            ".option('path', uri)"
        )
    return str(path)


def _is_bytes(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type))


def _spark_arrow_schema(arrow_schema: pa.Schema) -> tuple[StructType, pa.Schema]:
    """Return the Spark schema for ``arrow_schema`` and the Arrow schema Spark expects back."""
    spark_schema = from_arrow_schema(arrow_schema)
    return spark_schema, to_arrow_schema(spark_schema)


@dataclass
class _FragmentPartition(InputPartition):
    """One Lance fragment to read: its id and the position of its first row."""

    fragment_id: int | None
    start: int


@dataclass
class _Plan:
    """What the driver decided when the read was planned (pickled to workers)."""

    uri: str
    version: int | None
    columns: list[str] | None
    with_position: bool
    batch_size: int
    storage_options: dict[str, str] = field(repr=False)


class LanceDataSource(DataSource):
    """``spark.read.format("lance")`` and ``df.write.format("lance")``."""

    @classmethod
    def name(cls) -> str:
        """The format name."""
        return FORMAT_NAME

    def _plan(self) -> _Plan:
        from vlm_lake.tables.lance_io import open_dataset

        uri = _path(self.options)
        storage = _storage_options(self.options)
        version_opt = self.options.get("version")
        version = int(version_opt) if version_opt else open_dataset(uri, storage).version
        columns_opt = self.options.get("columns")
        columns = [c.strip() for c in columns_opt.split(",") if c.strip()] if columns_opt else None
        return _Plan(
            uri=uri,
            version=version,
            columns=columns,
            with_position=str(self.options.get("with_position", "false")).lower() == "true",
            batch_size=int(self.options.get("batch_size", "1024")),
            storage_options=storage,
        )

    def _arrow_schema(self, plan: _Plan) -> pa.Schema:
        from vlm_lake.tables.lance_io import open_dataset

        schema = open_dataset(plan.uri, plan.storage_options, plan.version).schema
        if plan.columns is not None:
            missing = [c for c in plan.columns if c not in schema.names]
            if missing:
                raise ValueError(
                    f"columns={plan.columns!r}: {missing} not in the dataset at {plan.uri!r}; "
                    f"available: {schema.names}"
                )
            schema = pa.schema([schema.field(c) for c in plan.columns])
        if plan.with_position:
            schema = schema.append(pa.field(POSITION_COLUMN, pa.int64(), nullable=False))
        return schema

    def schema(self) -> StructType:
        """Spark schema of the (column-selected) dataset."""
        return _spark_arrow_schema(self._arrow_schema(self._plan()))[0]

    def reader(self, schema: StructType) -> DataSourceReader:
        """Plan a read of one pinned version."""
        plan = self._plan()
        return _LanceReader(plan, to_arrow_schema(schema))

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        """Plan a distributed write committed once by the driver."""
        sink = FragmentSink(
            _path(self.options),
            to_arrow_schema(schema),
            _storage_options(self.options),
            int(self.options.get("max_rows_per_file", str(1024 * 1024))),
        )
        return _LanceWriter(sink, overwrite)


class _LanceReader(DataSourceReader):
    def __init__(self, plan: _Plan, arrow_schema: pa.Schema) -> None:
        self.plan = plan
        self.arrow_schema = arrow_schema

    def partitions(self) -> Sequence[InputPartition]:
        from vlm_lake.tables.lance_io import open_dataset

        ds = open_dataset(self.plan.uri, self.plan.storage_options, self.plan.version)
        parts: list[InputPartition] = []
        start = 0
        for frag in ds.get_fragments():
            parts.append(_FragmentPartition(frag.fragment_id, start))
            start += frag.count_rows()
        return parts or [_FragmentPartition(None, 0)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        from vlm_lake.tables.lance_io import open_dataset
        from vlm_lake.tables.reads import RANGE_ROWS, read_ranges

        assert isinstance(partition, _FragmentPartition)
        if partition.fragment_id is None:
            return
        plan = self.plan
        ds = open_dataset(plan.uri, plan.storage_options, plan.version)
        fragment = ds.get_fragment(partition.fragment_id)
        data_columns = plan.columns
        if data_columns is None:
            data_columns = [n for n in self.arrow_schema.names if n != POSITION_COLUMN]
        position = partition.start
        if any(_is_bytes(self.arrow_schema.field(c).type) for c in data_columns):
            # Image bytes: ranged reads keep a task's memory bounded (see read_ranges).
            batches = read_ranges(fragment, data_columns, min(plan.batch_size, RANGE_ROWS))
        else:
            batches = fragment.to_batches(columns=data_columns, batch_size=plan.batch_size)
        for batch in batches:
            arrays = list(batch.columns)
            if plan.with_position:
                arrays.append(pa.array(range(position, position + batch.num_rows), pa.int64()))
            position += batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [a.cast(f.type) for a, f in zip(arrays, self.arrow_schema, strict=True)],
                schema=self.arrow_schema,
            )


@dataclass
class LanceCommitMessage(WriterCommitMessage):
    """Fragments one task wrote, as Lance fragment-metadata JSON strings, and their rows."""

    fragments: list[str]
    rows: int = 0


class _LanceWriter(DataSourceArrowWriter):
    """The data source's writer: the fragment protocol of :mod:`vlm_lake.spark.fragment_job`.

    Each task writes its rows with a :class:`~vlm_lake.spark.fragment_job.FragmentSink`;
    the driver commits every task's fragments in one transaction.
    """

    def __init__(self, sink: FragmentSink, overwrite: bool) -> None:
        self.sink = sink
        self.overwrite = overwrite

    def write(self, iterator: Iterator[pa.RecordBatch]) -> LanceCommitMessage:  # type: ignore[override]
        schema = self.sink.schema
        batches = (
            pa.RecordBatch.from_arrays(
                [c.cast(f.type) for c, f in zip(b.columns, schema, strict=True)], schema=schema
            )
            for b in iterator
        )
        written, rows = self.sink.write(batches)
        return LanceCommitMessage(written, rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:  # type: ignore[override]
        from vlm_lake.tables.fragments import commit_fragments

        done = [m for m in messages if isinstance(m, LanceCommitMessage)]
        written = [f for m in done for f in m.fragments]
        ds = commit_fragments(
            self.sink.uri,
            self.sink.schema,
            written,
            self.sink.storage,
            mode="overwrite" if self.overwrite else "append",
        )
        log.info(
            "committed %d fragment(s), %d rows, to %s as version %d",
            len(written),
            sum(m.rows for m in done),
            self.sink.uri,
            ds.version,
        )

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:  # type: ignore[override]
        written = sum(len(m.fragments) for m in messages if isinstance(m, LanceCommitMessage))
        log.warning(
            "write to %s aborted; %d written fragment(s) stay uncommitted and invisible "
            "(Lance cleanup_old_versions removes such files)",
            self.sink.uri,
            written,
        )


def register(spark: Any) -> None:
    """Register the ``lance`` format on a Spark session (classic or Connect)."""
    spark.dataSource.register(LanceDataSource)


def read_lance(
    spark: Any,
    uri: str,
    *,
    storage_options: dict[str, str] | None = None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
    with_position: bool = False,
    batch_size: int = 1024,
) -> Any:
    """Read a Lance dataset as a Spark DataFrame through the ``lance`` data source.

    Args:
        spark: A SparkSession with the data source registered (see :func:`register`).
        uri: Dataset URI.
        storage_options: Lance storage options.
        columns: Read only these columns (Spark does not prune Python sources by itself).
        version: Version to read; None pins the latest at planning time.
        with_position: Add ``_rowpos``, the row's position in that version.
        batch_size: Rows per Arrow batch.

    Returns:
        A DataFrame with one partition per fragment.
    """
    reader = spark.read.format(FORMAT_NAME).options(
        **storage_options_to_spark(storage_options or {})
    )
    if columns is not None:
        reader = reader.option("columns", ",".join(columns))
    if version is not None:
        reader = reader.option("version", str(version))
    reader = reader.option("with_position", str(with_position).lower())
    return reader.option("batch_size", str(batch_size)).load(uri)


def write_lance(
    df: Any,
    uri: str,
    *,
    mode: str = "overwrite",
    storage_options: dict[str, str] | None = None,
    max_rows_per_file: int = 1024 * 1024,
) -> None:
    """Write a DataFrame to a Lance dataset: tasks write fragments, the driver commits once.

    Args:
        df: The DataFrame.
        uri: Dataset URI.
        mode: ``overwrite`` or ``append``.
        storage_options: Lance storage options.
        max_rows_per_file: Rows per data file.
    """
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode={mode!r} is not supported; allowed: overwrite, append")
    (
        df.write.format(FORMAT_NAME)
        .mode(mode)
        .options(**storage_options_to_spark(storage_options or {}))
        .option("max_rows_per_file", str(max_rows_per_file))
        .save(uri)
    )
