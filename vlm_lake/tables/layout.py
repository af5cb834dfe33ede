"""How the lake's Lance tables are laid out on disk, and the upkeep after each write.

Each table has a :class:`TableLayout`: its key column (which gets a scalar BTREE index),
how many rows go into one data file (fragment), and when small fragments are compacted.
Every number here was chosen with ``python -m benchmarks --only layout``; the measurement
behind each is written next to it (20,000 photos of ~55 KB, 10,000 documents, on 2 shared
cores; README "Lance layout, chosen by numbers" has the tables).

:func:`maintain` runs right after a writer's commit, before the checks: it may compact
small fragments and it creates or updates the key index. Each step it takes is one more
Lance commit on top of the writer's, so the version to check and publish is always the
*latest* one (``lance_io.summarize`` of the dataset after :func:`maintain`). A failure here
leaves the writer's version, a complete and correct table, as the latest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlm_lake.tables.lance_io import open_dataset

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)

#: Scalar index type of the key columns: ``BTREE`` suits unique string keys (``BITMAP`` is
#: for few distinct values). Without it every id lookup scans the key column, which grows
#: with the table; it builds in milliseconds and Lance's ``merge_insert`` joins through it
#: (measured: docs/benchmarks.md#lance-layout).
KEY_INDEX_TYPE = "BTREE"


def key_index_name(column: str) -> str:
    """Name of the scalar index on ``column`` (Lance's own default name)."""
    return f"{column}_idx"


@dataclass(frozen=True)
class CompactionPolicy:
    """When small fragments are rewritten into full ones.

    Every incremental ingest adds a small fragment (its new rows), not yet in the key
    index; many small fragments make lookups, upserts and scans several times slower
    (docs/benchmarks.md#lance-layout). Updating the index alone recovers most of the
    lookups; compaction recovers the rest. So :func:`maintain` leaves small fragments
    alone until there are ``max_small_fragments`` (16) of them, then updates the index and
    compacts them in one go: the upkeep (seconds) runs once per ~15 ingests, and what it
    leaves in between stays within a few times the compacted speed.

    Attributes:
        max_small_fragments: Compact once this many small fragments exist.
        small_fraction: A fragment is small when it holds fewer live rows than this
            fraction of the table's ``rows_per_fragment``.
    """

    max_small_fragments: int = 16
    small_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.max_small_fragments < 2:
            raise ValueError(
                f"max_small_fragments={self.max_small_fragments!r}: need at least 2 (one "
                "small fragment, the tail of a full write, is normal)"
            )
        if not 0.0 < self.small_fraction <= 1.0:
            raise ValueError(f"small_fraction={self.small_fraction!r}: must be in (0, 1]")

    def small_fragments(self, ds: lance.LanceDataset, rows_per_fragment: int) -> int:
        """How many fragments of ``ds`` hold fewer live rows than the small threshold."""
        limit = self.small_fraction * rows_per_fragment
        return sum(1 for f in ds.get_fragments() if f.physical_rows - _deleted_rows(f) < limit)

    def needs_compaction(self, ds: lance.LanceDataset, rows_per_fragment: int) -> bool:
        """Whether ``ds`` has reached ``max_small_fragments`` small fragments."""
        return self.small_fragments(ds, rows_per_fragment) >= self.max_small_fragments


def _deleted_rows(fragment: Any) -> int:
    deletion = fragment.metadata.deletion_file
    return 0 if deletion is None else int(deletion.num_deleted_rows or 0)


@dataclass(frozen=True)
class TableLayout:
    """The layout of one Lance table.

    Attributes:
        key: The unique key column; it gets a :data:`KEY_INDEX_TYPE` index.
        rows_per_fragment: Rows per data file when writing, and the target when
            compacting. Spark reads one partition per fragment.
        compaction: When small fragments are compacted.
    """

    key: str
    rows_per_fragment: int
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)

    def __post_init__(self) -> None:
        if self.rows_per_fragment < 1:
            raise ValueError(f"rows_per_fragment={self.rows_per_fragment!r}: must be at least 1")


#: ``image_lance``: 8k rows per fragment, ~440 MB of 55 KB photos. Spark reads one
#: partition per fragment: 1k rows gives many small partitions (per-task overhead
#: dominates), 64k too few (no parallelism on small tables); a million photos give 122
#: partitions, enough for a cluster. Random rows and id lookups do not depend on it
#: (docs/benchmarks.md#lance-layout).
IMAGES_LAYOUT = TableLayout(key="image_id", rows_per_fragment=8 * 1024)
#: ``text_lance``: rows are a few hundred bytes, so Lance's default 1M rows per fragment
#: (a few hundred MB) holds; reading texts is never the slow part.
TEXTS_LAYOUT = TableLayout(key="docid", rows_per_fragment=1024 * 1024)
#: ``multimodal_lance``: a row holds about two photos, so half the images' rows per
#: fragment gives fragments of the same size in bytes. This is the compaction target after
#: incremental joins; a full rebuild keeps the Spark tasks' fragments (see ``maintain``).
MULTIMODAL_LAYOUT = TableLayout(key="docid", rows_per_fragment=4 * 1024)


@dataclass(frozen=True)
class MaintenanceReport:
    """What :func:`maintain` did.

    Attributes:
        compacted: Whether small fragments were compacted.
        fragments_removed: Fragments rewritten by the compaction.
        fragments_added: Fragments it wrote.
        index: ``created`` (there was none, e.g. after a full rewrite), ``updated`` (rows
            written since it was built were added to it) or ``current``.
        seconds: Wall time.
    """

    compacted: bool
    fragments_removed: int
    fragments_added: int
    index: str
    seconds: float

    @property
    def committed(self) -> bool:
        """Whether :func:`maintain` added a version."""
        return self.compacted or self.index != "current"


def _key_index(ds: lance.LanceDataset, column: str) -> str | None:
    for index in ds.describe_indices():
        if list(index.field_names) == [column]:
            return str(index.name)
    return None


def maintain(
    uri: str,
    storage_options: dict[str, str] | None,
    layout: TableLayout,
    *,
    allow_compaction: bool = True,
) -> MaintenanceReport:
    """Compact small fragments (if the policy says so) and bring the key index up to date.

    Called right after a writer's commit. Whatever it does is committed on top of that
    version, so the latest version is still the one to check and publish.

    The index is created when the table has none (a full rewrite drops it). Rows added
    later (a merge) are not in it until it is updated: Lance scans them, which costs
    little while they are few, so it is updated before a compaction (Lance never merges
    indexed with unindexed fragments) or once more than ``rows_per_fragment`` rows wait.

    Args:
        uri: Dataset URI.
        storage_options: Lance storage options.
        layout: The table's layout.
        allow_compaction: False skips compaction (e.g. right after a distributed full
            rewrite, whose fragments follow the Spark tasks on purpose).

    Returns:
        A :class:`MaintenanceReport`.
    """
    started = time.perf_counter()
    ds = open_dataset(uri, storage_options)
    compact = allow_compaction and layout.compaction.needs_compaction(ds, layout.rows_per_fragment)
    name = _key_index(ds, layout.key)
    if name is None:
        ds.create_scalar_index(
            layout.key, KEY_INDEX_TYPE, name=key_index_name(layout.key), replace=True
        )
        index = "created"
    else:
        unindexed = int(ds.index_statistics(name).get("num_unindexed_rows", 0))
        # Before a compaction too: Lance never merges indexed with unindexed fragments,
        # so indexing first lets the compaction merge every small fragment.
        if unindexed and (compact or unindexed > layout.rows_per_fragment):
            ds.optimize.optimize_indices(index_names=[name])
            index = "updated"
        else:
            index = "current"
    removed = added = 0
    if compact:  # rewrites small fragments and remaps the index onto the new ones
        ds = open_dataset(uri, storage_options)
        metrics = ds.optimize.compact_files(target_rows_per_fragment=layout.rows_per_fragment)
        removed, added = int(metrics.fragments_removed), int(metrics.fragments_added)
    compacted = removed > 0  # the policy may fire with nothing Lance can merge
    report = MaintenanceReport(compacted, removed, added, index, time.perf_counter() - started)
    if report.committed:
        log.info(
            "%s: %s; index on %s %s (%.1f s)",
            uri,
            f"compacted {removed} fragments into {added}" if compacted else "no compaction",
            layout.key,
            index,
            report.seconds,
        )
    return report
