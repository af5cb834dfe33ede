"""The vector index on ``image_features`` and "which images look like this one".

* :func:`ensure_vector_index` keeps an IVF_PQ index on the features column up to date
  once the dataset is big enough for an index to pay off (one Lance commit at most).
* :func:`similar_images` answers "which images look like this one" with Lance's
  ``nearest`` search (the index when there is one, a flat scan otherwise).

Lance 14 puts every IVF centroid into its index statistics unless the environment variable
``LANCE_INCLUDE_VECTOR_CENTROIDS`` is ``false`` (its announced future default); a 4096 x 2048
index would make that a few hundred megabytes of JSON, so :func:`ensure_vector_index` sets
the variable to ``false`` when it is not already set.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_lake.features.vectors import check_key, unit_rows, vector_dim
from vlm_lake.tables.lance_io import open_dataset, sql_string_list

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)

INDEX_STATES = ("none", "created", "updated", "current")
METRICS = ("cosine", "l2", "dot")
MIN_INDEX_ROWS = 256  # PQ trains 256 centroids per sub-vector, IVF wants 256 rows per partition
PQ_SUB_VECTOR_DIMS = 16
MAX_PARTITIONS = 4096
_CENTROIDS_ENV = "LANCE_INCLUDE_VECTOR_CENTROIDS"


@dataclass(frozen=True)
class VectorIndexReport:
    """What :func:`ensure_vector_index` found and did.

    Attributes:
        state: ``none`` (too few rows, nothing written), ``created`` (a new index),
            ``updated`` (rows appended since were added to the index) or ``current``
            (the index already covered every row, nothing written).
        rows: Rows in the dataset.
        min_rows: The row count from which an index is kept.
        index_type: Lance's index type (``IVF_PQ``), None without an index.
        name: The index name, None without an index.
        num_partitions: IVF partitions of the index, None without an index.
        num_sub_vectors: PQ sub-vectors of the index, None without one.
        unindexed_rows: Rows the index does not cover after the call, None without an index.
        version: The dataset version after the call.
        metric: The index's distance metric (``cosine``), None without an index.
        newly_indexed: Rows the call added to the index (all rows when created).
    """

    state: str
    rows: int
    min_rows: int
    index_type: str | None
    name: str | None
    num_partitions: int | None
    num_sub_vectors: int | None
    unindexed_rows: int | None
    version: int
    metric: str | None = None
    newly_indexed: int = 0

    def describe(self) -> str:
        """Return a one-line human summary of the report."""
        shape = (
            f"{self.index_type} ({self.num_partitions} partitions, "
            f"{self.num_sub_vectors} sub-vectors, {self.metric})"
        )
        if self.state == "none":
            if self.index_type is None:
                return f"none: {self.rows} rows < {self.min_rows} (flat search)"
            return (
                f"none: {self.rows} rows < {self.min_rows}; existing {shape} index "
                f"{self.name!r} left as is"
            )
        if self.state == "created":
            return f"created {shape} on {self.rows} rows"
        if self.state == "updated":
            return (
                f"updated {shape}: added {self.newly_indexed} rows, "
                f"{self.unindexed_rows} of {self.rows} unindexed"
            )
        return f"current: {shape} covers all {self.rows} rows"


def _vector_index(ds: lance.LanceDataset, column: str) -> Any | None:
    """Return the description of the vector index on ``column``, or None."""
    for index in ds.describe_indices():
        is_vector = "Vector" in str(index.type_url) or str(index.index_type).upper().startswith(
            ("IVF", "HNSW")
        )
        if is_vector and list(index.field_names) == [column]:
            return index
    return None


def has_vector_index(ds: lance.LanceDataset, column: str) -> bool:
    """Whether ``column`` of ``ds`` has a vector index."""
    return _vector_index(ds, column) is not None


def _index_facts(ds: lance.LanceDataset, index: Any) -> dict[str, Any]:
    """Return type, partitions, sub-vectors, metric and unindexed rows of a vector index."""
    os.environ.setdefault(_CENTROIDS_ENV, "false")
    stats = ds.stats.index_stats(index.name)
    segments = stats.get("indices") or [{}]
    first = segments[0]
    first.pop("centroids", None)
    details = index.details or {}
    compression = details.get("compression") or {}
    sub = first.get("sub_index") or {}
    metric = first.get("metric_type") or details.get("metric_type")
    return {
        "index_type": str(stats.get("index_type") or index.index_type),
        "name": str(index.name),
        "num_partitions": first.get("num_partitions"),
        "num_sub_vectors": sub.get("num_sub_vectors") or compression.get("num_sub_vectors"),
        "metric": str(metric).lower() if metric is not None else None,
        "unindexed_rows": int(stats.get("num_unindexed_rows", 0)),
    }


def _partitions_for(rows: int) -> int:
    """IVF partitions for ``rows`` vectors: about sqrt(rows), 1..4096, >= 256 rows each.

    Lance trains at most ``rows // 256`` partitions (and warns when asked for more), so
    the sqrt rule is capped there; it only binds below 65,536 rows.
    """
    by_sqrt = min(MAX_PARTITIONS, max(1, round(math.sqrt(rows))))
    return max(1, min(by_sqrt, rows // MIN_INDEX_ROWS))


def ensure_vector_index(
    uri: str,
    storage_options: dict[str, str] | None = None,
    *,
    min_rows: int = 5000,
    column: str = "features",
    metric: str = "cosine",
) -> VectorIndexReport:
    """Keep an IVF_PQ vector index on ``column`` of the latest version up to date.

    Below ``min_rows`` rows nothing is written (a flat search is fast there). Otherwise,
    with no vector index on ``column`` one is trained: IVF with about sqrt(rows)
    partitions (1 to 4096, and at most rows // 256 since Lance trains no more), PQ with
    ``dim // 16`` sub-vectors of 16 dims and 8 bits each. With an index that misses rows
    appended since (an append or an update commit), Lance's index optimisation adds them
    to the existing partitions (``num_indices_to_merge=1``: merged into the index, not a
    delta; the partitions are not retrained). With every row covered nothing is written.
    Each call commits at most one new version.

    Args:
        uri: Dataset URI.
        storage_options: Lance storage options (empty for local paths).
        min_rows: Row count from which an index is kept; >= 256 (PQ training needs 256).
        column: The vector column, a fixed-size list of floats whose size divides by 16.
        metric: Distance metric of a new index: ``cosine``, ``l2`` or ``dot``.

    Returns:
        What was found and done, and the dataset version after the call.

    Raises:
        ValueError: If ``min_rows``, ``metric`` or ``column`` is not allowed.
        DatasetNotFoundError: If there is no dataset at ``uri``.
    """
    metric_name = _check_index_args(min_rows, metric)
    ds = open_dataset(uri, storage_options)
    dim = vector_dim(ds, column)
    if dim < PQ_SUB_VECTOR_DIMS or dim % PQ_SUB_VECTOR_DIMS:
        raise ValueError(
            f"column={column!r} has dimension {dim}; allowed: a positive multiple of "
            f"{PQ_SUB_VECTOR_DIMS} (PQ sub-vectors of {PQ_SUB_VECTOR_DIMS} dims)"
        )
    rows = ds.count_rows()
    index = _vector_index(ds, column)
    facts = _index_facts(ds, index) if index is not None else None
    started = time.perf_counter()
    if rows < min_rows:
        state, newly = "none", 0
    elif index is None:
        ds = ds.create_index(
            column,
            "IVF_PQ",
            name=f"{column}_idx",
            metric=metric_name,
            num_partitions=_partitions_for(rows),
            num_sub_vectors=dim // PQ_SUB_VECTOR_DIMS,
        )
        facts = _facts_after(ds, column, uri)
        state, newly = "created", rows - facts["unindexed_rows"]
    elif facts is not None and facts["unindexed_rows"] > 0:
        before = facts["unindexed_rows"]
        ds.optimize.optimize_indices(index_names=[index.name], num_indices_to_merge=1)
        facts = _facts_after(ds, column, uri)
        state, newly = "updated", before - facts["unindexed_rows"]
    else:
        state, newly = "current", 0
    if state in ("created", "updated"):
        log.info("vector index on %s: %s in %.1fs", uri, state, time.perf_counter() - started)
    facts = facts or {}
    report = VectorIndexReport(
        state=state,
        rows=rows,
        min_rows=min_rows,
        index_type=facts.get("index_type"),
        name=facts.get("name"),
        num_partitions=facts.get("num_partitions"),
        num_sub_vectors=facts.get("num_sub_vectors"),
        unindexed_rows=facts.get("unindexed_rows"),
        version=int(ds.version),
        metric=facts.get("metric"),
        newly_indexed=newly,
    )
    log.info("vector index on %s (version %d): %s", uri, report.version, report.describe())
    return report


def _check_index_args(min_rows: int, metric: str) -> str:
    """Validate :func:`ensure_vector_index`'s ``min_rows`` and ``metric``; the metric's name."""
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < MIN_INDEX_ROWS:
        raise ValueError(
            f"min_rows={min_rows!r} is too small; allowed: an integer >= {MIN_INDEX_ROWS} "
            "(PQ trains 256 centroids per sub-vector)"
        )
    metric_name = str(metric).lower()
    if metric_name not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; allowed: {', '.join(METRICS)}")
    return metric_name


def _facts_after(ds: lance.LanceDataset, column: str, uri: str) -> dict[str, Any]:
    """The index's facts after Lance wrote it; an index Lance cannot describe is an error."""
    index = _vector_index(ds, column)
    if index is None:  # pragma: no cover - Lance committed an index it cannot describe
        raise RuntimeError(f"Lance has no vector index on column={column!r} at {uri!r}")
    return _index_facts(ds, index)


def similar_images(
    ds: lance.LanceDataset,
    image_id: str,
    *,
    k: int = 10,
    key: str = "image_id",
    column: str = "features",
    refine_factor: int = 10,
    nprobes: int = 20,
) -> list[tuple[str, float]]:
    """Return the ``k`` rows most similar to one row, by cosine similarity, highest first.

    Uses Lance's ``nearest`` search with the cosine metric: through the vector index when
    the dataset has one (at least ``nprobes`` IVF partitions are searched and
    ``refine_factor`` times ``k`` candidates are re-ranked on the original vectors, so the
    similarities returned are exact while which rows are found is approximate), a flat
    scan otherwise. The row itself is left out. A query row with a
    null or zero vector has no direction and gets an empty list.

    Args:
        ds: An open Lance dataset.
        image_id: The key of the query row.
        k: How many neighbours to return (>= 1).
        key: The unique string id column.
        column: The vector column, a fixed-size list of floats.
        refine_factor: Re-rank this many times ``k`` index candidates exactly (>= 1).
        nprobes: Minimum IVF partitions to search with an index (>= 1; Lance's own
            default is 1, poor recall once there are many partitions).

    Returns:
        ``(id, cosine similarity)`` pairs, highest similarity first.

    Raises:
        KeyError: If no row has ``key == image_id``.
        ValueError: If ``k``, ``refine_factor`` or ``nprobes`` is out of range or a column
            has the wrong type.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} is invalid; allowed: an integer >= 1")
    for name, value in (("refine_factor", refine_factor), ("nprobes", nprobes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid; allowed: an integer >= 1")
    check_key(ds, key)
    dim = vector_dim(ds, column)
    found = ds.to_table(
        columns=[column], filter=f"`{key}` = {sql_string_list([image_id])}", limit=1
    )
    if found.num_rows == 0:
        raise KeyError(f"{key}={image_id!r} is not in the dataset (version {ds.version})")
    vector, ok = unit_rows(found.column(column).combine_chunks(), dim)
    if not ok[0]:
        log.warning("similar_images: %s=%r has a null or zero vector", key, image_id)
        return []
    nearest = {
        "column": column,
        "q": vector[0].numpy(),
        "k": k + 1,
        "metric": "cosine",
        "refine_factor": refine_factor,
        "minimum_nprobes": nprobes,
    }
    result = ds.to_table(columns=[key, "_distance"], nearest=nearest)
    ids = result.column(key).to_pylist()
    distances = result.column("_distance").to_numpy(zero_copy_only=False)
    neighbours = [
        (other, float(1.0 - distance))
        for other, distance in zip(ids, distances, strict=True)
        if other != image_id and np.isfinite(distance)
    ]
    neighbours.sort(key=lambda pair: -pair[1])
    return neighbours[:k]
