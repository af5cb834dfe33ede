"""The write phase both ingests share: merge the changes in one commit, then upkeep.

An ingest plans what changed (new and changed rows, keys to delete) and streams the rows;
:func:`commit_changes` turns that into at most one Lance commit: an overwrite for a full
rebuild, else one ``merge_insert`` keyed on the table's key that also deletes the given
keys. Then :func:`~vlm_lake.tables.layout.maintain` brings the key index up to date (and
compacts, by policy) on top, so the latest version is the candidate to check.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlm_lake.tables import lance_io
from vlm_lake.tables.layout import TableLayout, maintain


@dataclass(frozen=True)
class IngestReport:
    """What an ingest run changed; the image and text reports add their own fields.

    Attributes:
        summary: The dataset's latest version after the run (the candidate to check).
        committed: Whether this run wrote a new version (False when nothing changed).
        full_rebuild: Whether the table was rewritten rather than merged.
        base_version: The published version the changes were computed against, if any.
        inserted: Rows added.
        updated: Rows replaced because their source changed.
        unchanged: Sources already in the table with the same content.
        deleted: Rows deleted because their source is gone (``delete_missing``).
        missing_from_source: Rows kept although their source is gone.
        rejected: Every current rejection (new and carried over).
        written_ids: The key of every row written by this run.
        seconds: Wall time of the run.
    """

    summary: lance_io.DatasetSummary
    committed: bool
    full_rebuild: bool
    base_version: int | None
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    missing_from_source: int
    rejected: list[Any]
    written_ids: list[str] = field(repr=False)
    seconds: float


@dataclass(frozen=True)
class Committed:
    """What :func:`commit_changes` wrote."""

    committed: bool
    stats: lance_io.MergeStats


def commit_changes(
    batches: Iterator[pa.RecordBatch],
    *,
    uri: str,
    storage: dict[str, str],
    schema: pa.Schema,
    layout: TableLayout,
    rebuild: bool,
    delete_keys: Sequence[str] = (),
    message: str,
) -> Committed:
    """Write an ingest's rows in one commit (overwrite or merge), then run the table's upkeep.

    Args:
        batches: The new and changed rows (every row, for a rebuild).
        uri: Dataset URI.
        storage: Lance storage options.
        schema: The table's schema.
        layout: The table's layout (key, rows per fragment, compaction policy).
        rebuild: Overwrite the table instead of merging into it.
        delete_keys: Keys whose rows are deleted in the same merge (not for a rebuild).
        message: The commit message of a rebuild.

    Returns:
        Whether a version was written, and the merge's counts (a rebuild counts every row
        it wrote as inserted).
    """
    first = next(batches, None)  # peek: a run that writes nothing must not commit
    if rebuild:
        written = 0

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal written
            for batch in itertools.chain([first] if first is not None else [], batches):
                written += batch.num_rows
                yield batch

        lance_io.write_batches(
            counted(),
            uri,
            schema,
            storage,
            mode="overwrite",
            max_rows_per_file=layout.rows_per_fragment,
            commit_message=message,
        )
        stats = lance_io.MergeStats(written, 0, 0)
    elif first is not None or delete_keys:
        _, stats = lance_io.merge_batches(
            itertools.chain([first] if first is not None else [], batches),
            uri,
            schema,
            storage,
            on=layout.key,
            delete_keys=delete_keys,
        )
    else:
        return Committed(False, lance_io.MergeStats(0, 0, 0))
    maintain(uri, storage, layout)
    return Committed(True, stats)
