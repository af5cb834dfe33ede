"""Lance dataset I/O: open, stream-write, commit written fragments, summarise.

Every write here is a single Lance commit: readers see either the previous version or the
new one, never a half-written table. ``lance`` is imported inside functions so that merely
importing this module never loads Lance's runtime into a process that may fork later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from vlm_lake.errors import DatasetNotFoundError

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_MODES = ("create", "overwrite", "append")


def consume(batches: Iterable[pa.RecordBatch], schema: pa.Schema, write: Callable[[Any], T]) -> T:
    """Run ``write`` on a reader over ``batches``, re-raising the producer's own error.

    Lance reports a failing input stream as a generic ``OSError`` that carries the Python
    traceback as text; callers deserve the original exception (an ``InvalidImageError``
    naming the object, say), so that one is raised, chained to Lance's.
    """
    produced: list[BaseException] = []

    def watch() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as exc:
            produced.append(exc)
            raise

    try:
        return write(pa.RecordBatchReader.from_batches(schema, watch()))
    except Exception as exc:
        if produced:
            raise produced[0] from exc
        raise


def open_dataset(
    uri: str, storage_options: dict[str, str] | None = None, version: int | str | None = None
) -> lance.LanceDataset:
    """Open a Lance dataset, raising a clear error if it does not exist.

    Args:
        uri: Dataset URI.
        storage_options: Lance storage options (empty for local paths).
        version: A version number or tag; None for the latest.

    Raises:
        DatasetNotFoundError: If there is no dataset at ``uri``.
    """
    import lance

    try:
        return lance.dataset(uri, version=version, storage_options=storage_options or None)
    except (ValueError, OSError, FileNotFoundError) as exc:
        text = str(exc).lower()
        if "nosuchbucket" in text or "bucket does not exist" in text:
            raise DatasetNotFoundError(
                f"the bucket of uri={uri!r} does not exist (or is not visible with these "
                "credentials); check LAKE_URI and AWS_ENDPOINT_URL"
            ) from exc
        if "not found" in text or "does not exist" in text:
            raise DatasetNotFoundError(
                f"no Lance dataset at uri={uri!r} (version={version!r}); "
                "materialize its upstream asset first"
            ) from exc
        raise


def write_batches(
    batches: Iterable[pa.RecordBatch],
    uri: str,
    schema: pa.Schema,
    storage_options: dict[str, str] | None = None,
    *,
    mode: str = "overwrite",
    max_rows_per_file: int = 1024 * 1024,
    commit_message: str | None = None,
) -> lance.LanceDataset:
    """Stream record batches into one Lance commit.

    The batches are consumed lazily, so memory stays bounded by a few batches. If the
    iterator raises, nothing is committed and the previous version stays current.

    Args:
        batches: Record batches matching ``schema``.
        uri: Dataset URI.
        schema: Arrow schema of the batches.
        storage_options: Lance storage options.
        mode: ``create``, ``overwrite`` or ``append``.
        max_rows_per_file: Rows per data file (fragment).
        commit_message: Recorded in the Lance transaction.

    Returns:
        The dataset at the new version.
    """
    import lance

    if mode not in WRITE_MODES:
        raise ValueError(f"mode={mode!r} is not a write mode; allowed: {', '.join(WRITE_MODES)}")
    return consume(
        batches,
        schema,
        lambda reader: lance.write_dataset(
            reader,
            uri,
            schema=schema,
            mode=mode,
            max_rows_per_file=max_rows_per_file,
            storage_options=storage_options or None,
            commit_message=commit_message,
        ),
    )


@dataclass(frozen=True)
class MergeStats:
    """What a :func:`merge_batches` commit changed."""

    inserted: int
    updated: int
    deleted: int


def sql_string_list(values: Iterable[str]) -> str:
    """Render strings as a SQL ``IN`` list body with single quotes escaped."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def merge_batches(
    batches: Iterable[pa.RecordBatch],
    uri: str,
    schema: pa.Schema,
    storage_options: dict[str, str] | None = None,
    *,
    on: str,
    delete_keys: Sequence[str] = (),
) -> tuple[lance.LanceDataset, MergeStats]:
    """Upsert batches into an existing dataset by key, and delete ``delete_keys``, in one commit.

    Rows whose ``on`` value exists are replaced, the others are inserted; rows keyed by
    ``delete_keys`` (and not in the batches) are deleted. Like every write here it is one
    commit: an error in ``batches`` leaves the previous version current.

    Args:
        batches: Record batches matching ``schema``; each key at most once.
        uri: Dataset URI (the dataset must exist).
        schema: Arrow schema of the batches.
        storage_options: Lance storage options.
        on: The key column (``image_id``, ``docid``).
        delete_keys: Keys to delete from the dataset.

    Returns:
        The dataset at the new version and the insert/update/delete counts.
    """
    ds = open_dataset(uri, storage_options)
    builder = ds.merge_insert(on).when_matched_update_all().when_not_matched_insert_all()
    if delete_keys:
        builder = builder.when_not_matched_by_source_delete(
            f"{on} IN ({sql_string_list(delete_keys)})"
        )
    result = consume(batches, schema, builder.execute)
    stats = MergeStats(
        inserted=int(result["num_inserted_rows"]),
        updated=int(result["num_updated_rows"]),
        deleted=int(result["num_deleted_rows"]),
    )
    return open_dataset(uri, storage_options), stats


@dataclass(frozen=True)
class DatasetSummary:
    """What a materialization reports about a Lance dataset."""

    uri: str
    version: int
    num_rows: int
    num_fragments: int
    schema: pa.Schema

    def columns(self) -> list[tuple[str, str]]:
        """Return ``(name, arrow type)`` pairs of the schema."""
        return [(f.name, str(f.type)) for f in self.schema]


def summarize(ds: lance.LanceDataset, uri: str) -> DatasetSummary:
    """Build a :class:`DatasetSummary` of an open dataset."""
    return DatasetSummary(
        uri=uri,
        version=ds.version,
        num_rows=ds.count_rows(),
        num_fragments=len(ds.get_fragments()),
        schema=ds.schema,
    )


def column_map(ds: lance.LanceDataset, key: str, *values: str) -> dict[Any, Any]:
    """Map ``key`` to one column's value (or a tuple of several) for every row of ``ds``."""
    table = ds.to_table(columns=[key, *values])
    keys = table.column(key).to_pylist()
    cols = [table.column(v).to_pylist() for v in values]
    vals = cols[0] if len(cols) == 1 else list(zip(*cols, strict=True))
    return dict(zip(keys, vals, strict=True))


def preview_rows(ds: lance.LanceDataset, limit: int = 5) -> list[dict[str, Any]]:
    """Return the first ``limit`` rows with binary values replaced by ``<N bytes>``."""
    table = ds.head(limit) if hasattr(ds, "head") else ds.to_table(limit=limit)
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, bytes | bytearray):
                row[key] = f"<{len(value)} bytes>"
    return rows
