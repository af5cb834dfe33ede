"""Image similarity over the ``image_features`` Lance dataset.

Three tools, one idea (cosine similarity of pooled ResNet-50 features):

* :func:`near_duplicate_pairs` counts near-duplicate image pairs exactly, by brute force,
  streaming the dataset once per block of query rows so it works far beyond RAM.
* :func:`ensure_vector_index` keeps an IVF_PQ index on the features column up to date
  once the dataset is big enough for an index to pay off (one Lance commit at most).
* :func:`similar_images` answers "which images look like this one" with Lance's
  ``nearest`` search (the index when there is one, a flat scan otherwise).

``lance`` and ``torch`` are imported inside functions: Lance is not fork-safe and torch is
slow to import, and neither is needed merely to import this module.

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
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.lance_io import open_dataset, sql_string_list

if TYPE_CHECKING:
    import lance
    import torch

log = logging.getLogger(__name__)

INDEX_STATES = ("none", "created", "updated", "current")
METRICS = ("cosine", "l2", "dot")
MIN_INDEX_ROWS = 256  # PQ trains 256 centroids per sub-vector, IVF wants 256 rows per partition
PQ_SUB_VECTOR_DIMS = 16
MAX_PARTITIONS = 4096
_CENTROIDS_ENV = "LANCE_INCLUDE_VECTOR_CENTROIDS"
# Lance's default scan reads ahead without a row bound (the whole of a 600 MB dataset
# ended up buffered); two batches of one fragment keep the decoder busy during a matmul.
SCAN_BATCH_READAHEAD = 2


@dataclass(frozen=True)
class NearDuplicates:
    """The near-duplicate pairs :func:`near_duplicate_pairs` found.

    Attributes:
        threshold: The cosine similarity a pair needed to be counted.
        count: Unordered pairs of distinct rows with cosine >= ``threshold``.
        examples: Up to ``max_examples`` pairs ``(id_a, id_b, cosine)``, highest cosine
            first, ``id_a < id_b``, cosine rounded to 6 decimals.
        queries: Rows compared as the query side.
        rows: Rows in the dataset.
    """

    threshold: float
    count: int
    examples: list[tuple[str, str, float]]
    queries: int
    rows: int


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


def _vector_dim(ds: lance.LanceDataset, column: str) -> int:
    """Return the dimension of ``column``, a fixed-size list of floats, or raise ValueError."""
    names = ds.schema.names
    if column not in names:
        raise ValueError(f"column={column!r} is not in the dataset; allowed: {', '.join(names)}")
    kind = ds.schema.field(column).type
    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_floating(kind.value_type):
        raise ValueError(
            f"column={column!r} has type {kind}; allowed: a fixed-size list of floats "
            "(e.g. fixed_size_list<float32, 2048>)"
        )
    return int(kind.list_size)


def _check_key(ds: lance.LanceDataset, key: str) -> None:
    """Raise ValueError unless ``key`` is a string column of ``ds``."""
    names = ds.schema.names
    if key not in names:
        raise ValueError(f"key={key!r} is not in the dataset; allowed: {', '.join(names)}")
    kind = ds.schema.field(key).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"key={key!r} has type {kind}; allowed: a string column")


def _unit_rows(vectors: pa.Array, dim: int) -> tuple[torch.Tensor, np.ndarray]:
    """L2-normalise a fixed-size-list array into a float32 tensor ``[n, dim]``.

    Null vectors, vectors with a non-finite value and zero vectors come back as zero rows
    and ``False`` in the returned mask: they have no direction, so they match nothing.
    """
    import torch

    n = len(vectors)
    child = vectors.values.slice(vectors.offset * dim, n * dim)
    flat = child.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    matrix = flat.reshape(n, dim)
    ok = np.isfinite(matrix).all(axis=1)
    if vectors.null_count:
        ok &= ~vectors.is_null().to_numpy(zero_copy_only=False)
    matrix[~ok] = 0.0
    tensor = torch.from_numpy(matrix)
    norms = torch.linalg.vector_norm(tensor, dim=1)
    ok &= (norms > 0).numpy()
    tensor = tensor / norms.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
    tensor[torch.from_numpy(~ok)] = 0.0
    return tensor, ok


def _query_positions(
    ds: lance.LanceDataset, key: str, query_ids: Collection[str], batch_rows: int
) -> np.ndarray:
    """Return the sorted row positions whose ``key`` is in ``query_ids`` (key column only)."""
    wanted = pa.array(sorted(set(query_ids)), pa.string())
    found: list[np.ndarray] = []
    seen = 0
    matched = 0
    for batch in ds.to_batches(columns=[key], batch_size=batch_rows, scan_in_order=True):
        hit = pc.is_in(batch.column(0), value_set=wanted).fill_null(False)
        where = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
        found.append(where + seen)
        matched += len(where)
        seen += batch.num_rows
    positions = np.concatenate(found) if found else np.empty(0, np.int64)
    if matched < len(wanted):
        log.warning(
            "near_duplicate_pairs: %d of %d query_ids are not in the dataset",
            len(wanted) - matched,
            len(wanted),
        )
    return positions.astype(np.int64)


class _TopPairs:
    """The running best ``limit`` pairs, kept as a short sorted list."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pairs: list[tuple[float, str, str]] = []

    def offer(
        self, scores: torch.Tensor, hits: torch.Tensor, q_keys: list[str], r_keys: pa.Array
    ) -> None:
        """Merge the best hits of one query-block x batch tile into the running list."""
        import torch

        if self.limit == 0:
            return
        total = int(hits.sum())
        take = min(self.limit, total)
        if self.pairs and len(self.pairs) >= self.limit:
            floor = self.pairs[-1][0]
            hits = hits & (scores >= floor)
            take = min(take, int(hits.sum()))
        if take == 0:
            return
        masked = scores.masked_fill(~hits, -torch.inf).flatten()
        values, flat_index = torch.topk(masked, take)
        cols = scores.shape[1]
        for value, index in zip(values.tolist(), flat_index.tolist(), strict=True):
            a = q_keys[index // cols]
            b = r_keys[index % cols].as_py()
            self.pairs.append((min(value, 1.0), *sorted((a, b))))
        self.pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        del self.pairs[self.limit :]

    def examples(self) -> list[tuple[str, str, float]]:
        """Return the pairs as ``(id_a, id_b, cosine)``, cosine rounded to 6 decimals."""
        rounded = [(a, b, round(value, 6)) for value, a, b in self.pairs]
        return sorted(rounded, key=lambda p: (-p[2], p[0], p[1]))


def near_duplicate_pairs(
    ds: lance.LanceDataset,
    *,
    query_ids: Collection[str] | None = None,
    threshold: float = 0.98,
    key: str = "image_id",
    column: str = "features",
    max_examples: int = 20,
    block_rows: int = 4096,
) -> NearDuplicates:
    """Count pairs of rows whose vectors have cosine similarity >= ``threshold``, exactly.

    Every query row (each row whose ``key`` is in ``query_ids``, or every row) is compared
    with every row of ``ds`` by brute force: the query rows are taken ``block_rows`` at a
    time and, for each block, the dataset is streamed once in batches of ``block_rows``
    rows; each tile is one float32 torch matmul of L2-normalised vectors (torch uses every
    core). Memory stays at about two ``block_rows x dim`` float32 matrices plus one
    ``block_rows x block_rows`` score tile, whatever the size of the dataset.

    Cost: ``queries x rows x dim`` multiply-adds (halved when ``query_ids`` is None, since
    each block only scans the rows from its first one on), so an incremental check with a
    few new ``query_ids`` is cheap while a full pass over N rows is quadratic in N.

    Each unordered pair is counted once: a pair is seen from a query row ``q`` against a
    scanned row ``r`` and counted when ``r`` is not a query row, or when it is and comes
    after ``q`` in the dataset (so a pair of two query rows is counted from its first row
    only). A row never pairs with itself; a null, zero or non-finite vector matches nothing.

    Args:
        ds: An open Lance dataset (one pinned version).
        query_ids: Keys of the rows to compare with the whole dataset; None for every row.
        threshold: Minimum cosine similarity, in (-1, 1].
        key: The unique string id column.
        column: The vector column, a fixed-size list of floats.
        max_examples: How many of the most similar pairs to return (>= 0).
        block_rows: Query rows per block and scanned rows per batch (>= 1).

    Returns:
        The pair count, the top pairs, and how many queries and rows were compared.

    Raises:
        ValueError: If an argument is out of range or a column has the wrong type.
    """
    import torch

    if not -1.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} is out of range; allowed: -1 < threshold <= 1")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows={block_rows!r} is invalid; allowed: an integer >= 1")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise ValueError(f"max_examples={max_examples!r} is invalid; allowed: an integer >= 0")
    if isinstance(query_ids, str):
        raise ValueError(f"query_ids={query_ids!r} is a string; allowed: a collection of ids")
    _check_key(ds, key)
    dim = _vector_dim(ds, column)

    started = time.perf_counter()
    rows = ds.count_rows()
    if query_ids is None:
        positions = None
        queries = rows
    else:
        positions = _query_positions(ds, key, query_ids, max(block_rows, 8192))
        queries = len(positions)

    top = _TopPairs(max_examples)
    count = 0
    for start in range(0, queries, block_rows):
        if positions is None:
            q_pos = np.arange(start, min(start + block_rows, rows), dtype=np.int64)
            block = ds.to_table(
                columns=[key, column],
                offset=start,
                limit=len(q_pos),
                batch_readahead=SCAN_BATCH_READAHEAD,
                fragment_readahead=1,
            )
        else:
            q_pos = positions[start : start + block_rows]
            block = ds.take(q_pos.tolist(), columns=[key, column])
        q_vec, q_ok = _unit_rows(block.column(column).combine_chunks(), dim)
        q_keep = np.flatnonzero(q_ok)
        if len(q_keep) == 0:
            continue
        q_vec = q_vec[torch.from_numpy(q_keep)]
        q_keys = [block.column(key)[int(i)].as_py() for i in q_keep]
        q_pos = q_pos[q_keep]
        q_pos_t = torch.from_numpy(q_pos).unsqueeze(1)
        # With every row a query, rows before this block pair with it only from earlier
        # blocks, so the scan starts at the block.
        scan = ds.to_batches(
            columns=[key, column],
            batch_size=block_rows,
            offset=start if positions is None else None,
            scan_in_order=True,
            batch_readahead=SCAN_BATCH_READAHEAD,
            fragment_readahead=1,
        )
        seen = start if positions is None else 0
        for batch in scan:
            n = batch.num_rows
            r_pos = np.arange(seen, seen + n, dtype=np.int64)
            seen += n
            if positions is None:
                r_query = np.ones(n, dtype=bool)
            else:
                slot = np.searchsorted(positions, r_pos)
                r_query = positions[np.minimum(slot, len(positions) - 1)] == r_pos
            if r_query.all() and r_pos[-1] <= q_pos[0]:
                continue  # every pair here is counted from the other side, or is a self pair
            r_vec, r_ok = _unit_rows(batch.column(column), dim)
            if not r_ok.any():
                continue
            scores = q_vec @ r_vec.T
            hits = scores >= threshold
            always = torch.from_numpy(r_ok & ~r_query)
            ordered = torch.from_numpy(r_ok & r_query)
            if r_pos[0] > q_pos[-1]:
                valid = (always | ordered).unsqueeze(0)
            else:
                after = torch.from_numpy(r_pos).unsqueeze(0) > q_pos_t
                valid = always.unsqueeze(0) | (ordered.unsqueeze(0) & after)
            hits &= valid
            found = int(hits.sum())
            if found:
                count += found
                top.offer(scores, hits, q_keys, batch.column(key))

    seconds = time.perf_counter() - started
    log.info(
        "near_duplicate_pairs: %d pairs with cosine >= %g among %d queries x %d rows "
        "(dim %d) in %.2fs",
        count,
        threshold,
        queries,
        rows,
        dim,
        seconds,
    )
    return NearDuplicates(
        threshold=threshold, count=count, examples=top.examples(), queries=queries, rows=rows
    )


def _vector_index(ds: lance.LanceDataset, column: str) -> Any | None:
    """Return the description of the vector index on ``column``, or None."""
    for index in ds.describe_indices():
        is_vector = "Vector" in str(index.type_url) or str(index.index_type).upper().startswith(
            ("IVF", "HNSW")
        )
        if is_vector and list(index.field_names) == [column]:
            return index
    return None


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
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < MIN_INDEX_ROWS:
        raise ValueError(
            f"min_rows={min_rows!r} is too small; allowed: an integer >= {MIN_INDEX_ROWS} "
            "(PQ trains 256 centroids per sub-vector)"
        )
    metric_name = str(metric).lower()
    if metric_name not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; allowed: {', '.join(METRICS)}")
    ds = open_dataset(uri, storage_options)
    dim = _vector_dim(ds, column)
    if dim < PQ_SUB_VECTOR_DIMS or dim % PQ_SUB_VECTOR_DIMS:
        raise ValueError(
            f"column={column!r} has dimension {dim}; allowed: a positive multiple of "
            f"{PQ_SUB_VECTOR_DIMS} (PQ sub-vectors of {PQ_SUB_VECTOR_DIMS} dims)"
        )
    rows = ds.count_rows()
    index = _vector_index(ds, column)
    facts = _index_facts(ds, index) if index is not None else None

    if rows < min_rows:
        state, newly = "none", 0
    elif index is None:
        started = time.perf_counter()
        partitions = _partitions_for(rows)
        ds = ds.create_index(
            column,
            "IVF_PQ",
            name=f"{column}_idx",
            metric=metric_name,
            num_partitions=partitions,
            num_sub_vectors=dim // PQ_SUB_VECTOR_DIMS,
        )
        index = _vector_index(ds, column)
        if index is None:  # pragma: no cover - Lance committed an index it cannot describe
            raise RuntimeError(f"Lance created no vector index on column={column!r} at {uri!r}")
        facts = _index_facts(ds, index)
        state, newly = "created", rows - facts["unindexed_rows"]
        log.info("vector index on %s: created in %.1fs", uri, time.perf_counter() - started)
    elif facts is not None and facts["unindexed_rows"] > 0:
        started = time.perf_counter()
        before = facts["unindexed_rows"]
        ds.optimize.optimize_indices(index_names=[index.name], num_indices_to_merge=1)
        index = _vector_index(ds, column)
        facts = _index_facts(ds, index) if index is not None else None
        after = facts["unindexed_rows"] if facts is not None else before
        state, newly = "updated", before - after
        log.info("vector index on %s: updated in %.1fs", uri, time.perf_counter() - started)
    else:
        state, newly = "current", 0

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
    _check_key(ds, key)
    dim = _vector_dim(ds, column)
    found = ds.to_table(
        columns=[column], filter=f"`{key}` = {sql_string_list([image_id])}", limit=1
    )
    if found.num_rows == 0:
        raise KeyError(f"{key}={image_id!r} is not in the dataset (version {ds.version})")
    vector, ok = _unit_rows(found.column(column).combine_chunks(), dim)
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
