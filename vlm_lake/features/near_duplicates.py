"""Near-duplicate image pairs over ``image_features``, counted exactly by brute force.

:func:`near_duplicate_pairs` compares every query row with every row, streaming the
dataset once per block of query rows, so it works far beyond RAM; its cost is quadratic in
the rows compared (see its docstring).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.features.vectors import check_key, unit_rows, vector_dim

if TYPE_CHECKING:
    import lance
    import torch

log = logging.getLogger(__name__)

# Lance's default scan reads ahead without a row bound (a whole dataset could end up
# buffered); two batches of one fragment keep the decoder busy during a matmul.
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
    _validate(ds, query_ids, threshold, key, column, max_examples, block_rows)
    started = time.perf_counter()
    scan = _PairScan(ds, key, column, threshold, block_rows, max_examples)
    rows = scan.rows
    positions = None
    if query_ids is not None:
        positions = _query_positions(ds, key, query_ids, max(block_rows, 8192))
    queries = rows if positions is None else len(positions)
    for start in range(0, queries, block_rows):
        scan.block(start, positions)
    log.info(
        "near_duplicate_pairs: %d pairs with cosine >= %g among %d queries x %d rows "
        "(dim %d) in %.2fs",
        scan.count,
        threshold,
        queries,
        rows,
        scan.dim,
        time.perf_counter() - started,
    )
    return NearDuplicates(
        threshold=threshold,
        count=scan.count,
        examples=scan.top.examples(),
        queries=queries,
        rows=rows,
    )


def _validate(
    ds: lance.LanceDataset,
    query_ids: Collection[str] | None,
    threshold: float,
    key: str,
    column: str,
    max_examples: int,
    block_rows: int,
) -> None:
    """Raise ValueError naming the first argument of :func:`near_duplicate_pairs` out of range."""
    if not -1.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} is out of range; allowed: -1 < threshold <= 1")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows={block_rows!r} is invalid; allowed: an integer >= 1")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise ValueError(f"max_examples={max_examples!r} is invalid; allowed: an integer >= 0")
    if isinstance(query_ids, str):
        raise ValueError(f"query_ids={query_ids!r} is a string; allowed: a collection of ids")
    check_key(ds, key)
    vector_dim(ds, column)


class _PairScan:
    """The running count and top pairs, one block of query rows at a time."""

    def __init__(
        self,
        ds: lance.LanceDataset,
        key: str,
        column: str,
        threshold: float,
        block_rows: int,
        max_examples: int,
    ) -> None:
        self.ds, self.key, self.column = ds, key, column
        self.threshold, self.block_rows = threshold, block_rows
        self.dim = vector_dim(ds, column)
        self.rows = ds.count_rows()
        self.top = _TopPairs(max_examples)
        self.count = 0

    def block(self, start: int, positions: np.ndarray | None) -> None:
        """Compare the query rows ``start .. start + block_rows`` with the dataset."""
        import torch

        ds, key, column = self.ds, self.key, self.column
        if positions is None:
            q_pos = np.arange(start, min(start + self.block_rows, self.rows), dtype=np.int64)
            block = ds.to_table(
                columns=[key, column],
                offset=start,
                limit=len(q_pos),
                batch_readahead=SCAN_BATCH_READAHEAD,
                fragment_readahead=1,
            )
        else:
            q_pos = positions[start : start + self.block_rows]
            block = ds.take(q_pos.tolist(), columns=[key, column])
        q_vec, q_ok = unit_rows(block.column(column).combine_chunks(), self.dim)
        q_keep = np.flatnonzero(q_ok)
        if len(q_keep) == 0:
            return
        q_vec = q_vec[torch.from_numpy(q_keep)]
        q_keys = [block.column(key)[int(i)].as_py() for i in q_keep]
        # With every row a query, rows before this block pair with it only from earlier
        # blocks, so the scan starts at the block.
        scan = ds.to_batches(
            columns=[key, column],
            batch_size=self.block_rows,
            offset=start if positions is None else None,
            scan_in_order=True,
            batch_readahead=SCAN_BATCH_READAHEAD,
            fragment_readahead=1,
        )
        seen = start if positions is None else 0
        for batch in scan:
            r_pos = np.arange(seen, seen + batch.num_rows, dtype=np.int64)
            seen += batch.num_rows
            self._tile(q_vec, q_keys, q_pos[q_keep], batch, r_pos, positions)

    def _tile(
        self,
        q_vec: torch.Tensor,
        q_keys: list[str],
        q_pos: np.ndarray,
        batch: pa.RecordBatch,
        r_pos: np.ndarray,
        positions: np.ndarray | None,
    ) -> None:
        """Score one block of queries against one scanned batch; count each pair once."""
        import torch

        if positions is None:
            r_query = np.ones(len(r_pos), dtype=bool)
        else:
            slot = np.searchsorted(positions, r_pos)
            r_query = positions[np.minimum(slot, len(positions) - 1)] == r_pos
        if r_query.all() and r_pos[-1] <= q_pos[0]:
            return  # every pair here is counted from the other side, or is a self pair
        r_vec, r_ok = unit_rows(batch.column(self.column), self.dim)
        if not r_ok.any():
            return
        scores = q_vec @ r_vec.T
        hits = scores >= self.threshold
        always = torch.from_numpy(r_ok & ~r_query)
        ordered = torch.from_numpy(r_ok & r_query)
        if r_pos[0] > q_pos[-1]:
            valid = (always | ordered).unsqueeze(0)
        else:
            after = torch.from_numpy(r_pos).unsqueeze(0) > torch.from_numpy(q_pos).unsqueeze(1)
            valid = always.unsqueeze(0) | (ordered.unsqueeze(0) & after)
        hits &= valid
        found = int(hits.sum())
        if found:
            self.count += found
            self.top.offer(scores, hits, q_keys, batch.column(self.key))
