"""Duplicate clusters of images: exact (sha256) and perceptual (phash Hamming distance).

Perceptual pairs are found without comparing all pairs (multi-index hashing): identical
hashes are merged first; then the 64 bits are cut into ``threshold + 1`` bands, and two
hashes within ``threshold`` bits agree exactly on at least one band (pigeonhole), so only
hashes sharing a band value are compared. Pairs are joined into clusters (union-find).

Each cluster keeps one image: the largest resolution (width x height), then the first
ingested (the lowest row position); the others are its duplicates. Measured cost against
all pairs: docs/benchmarks.md#curation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Default largest Hamming distance (bits of 64) between perceptual duplicates: the
#: shipped photo re-encoded, resized, cropped by 4% or turned by EXIF is 0-6 bits away,
#: another photo about 30 (tests/unit/test_image_signals.py).
PHASH_THRESHOLD = 6


@dataclass(frozen=True)
class Clusters:
    """Images grouped into duplicate clusters.

    Attributes:
        cluster: For each image, the index of its cluster's kept image (itself when it is
            kept or in no cluster).
        size: For each image, the size of its cluster (1: no duplicate).
    """

    cluster: np.ndarray
    size: np.ndarray

    def duplicates(self) -> np.ndarray:
        """Indices of the images that are not kept (their cluster keeps another)."""
        return np.flatnonzero(self.cluster != np.arange(len(self.cluster)))

    def keep_first_eligible(self, eligible: np.ndarray) -> Clusters:
        """The same clusters, each keeping its first member in ``eligible`` (if it has one)."""
        cluster = self.cluster.copy()
        for group in self.groups():
            ok = group[np.asarray(eligible, bool)[group]]
            if len(ok):
                cluster[group] = ok.min()
        return Clusters(cluster=cluster, size=self.size)

    def groups(self) -> list[np.ndarray]:
        """The clusters of two or more images, largest first, each kept image first."""
        order = np.argsort(self.cluster, kind="stable")
        keys = self.cluster[order]
        cuts = np.flatnonzero(np.diff(keys)) + 1
        out = []
        for group in np.split(order, cuts):
            if len(group) > 1:
                kept = self.cluster[group[0]]
                out.append(np.concatenate([[kept], group[group != kept]]))
        return sorted(out, key=len, reverse=True)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        """Each element's root, by pointer jumping (vectorized: no Python loop per element)."""
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                return parent
            parent = jumped


def _bands(threshold: int) -> list[tuple[int, int]]:
    """``threshold + 1`` (shift, width) bit ranges covering 64 bits."""
    count = threshold + 1
    edges = np.linspace(0, 64, count + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def hamming_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i < j)`` of distinct ``hashes`` (uint64) within ``threshold`` bits.

    Args:
        hashes: Distinct 64-bit hashes.
        threshold: Largest Hamming distance (0..63).

    Returns:
        Two index arrays, each pair once.
    """
    if not 0 <= threshold < 64:
        raise ValueError(f"threshold={threshold!r} must be 0..63 bits")

    def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.bitwise_count(hashes[a] ^ hashes[b]) <= threshold

    parts = [
        same_key_pairs((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1), close)
        for shift, width in _bands(threshold)
    ]
    return unique_pairs(
        np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    )


def same_key_pairs(
    keys: np.ndarray, keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions with equal ``keys`` (that ``keep`` accepts), vectorized.

    Sorted by key, the members of a group are consecutive: the pairs at distance ``d`` in
    that order are found for all groups at once, ``d = 1, 2, ...`` while any group is that
    large; the work is the number of pairs, with no Python loop per group.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    a_parts, b_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    idx, d = np.flatnonzero(ordered[1:] == ordered[:-1]), 1
    while len(idx):
        a, b = order[idx], order[idx + d]
        mask = keep(a, b) if keep is not None else slice(None)
        a_parts.append(a[mask])
        b_parts.append(b[mask])
        d += 1
        idx = idx[idx + d < len(ordered)]
        idx = idx[ordered[idx + d] == ordered[idx]]
    return np.concatenate(a_parts), np.concatenate(b_parts)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``(min, max)`` of ``a`` and ``b``, each once, sorted."""
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def perceptual_links(
    hashes: np.ndarray, threshold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs joining images whose hashes are within ``threshold`` bits, and distances.

    Args:
        hashes: 64-bit hashes (uint64), one per image, repeats allowed.
        threshold: Largest Hamming distance (0..63).

    Returns:
        ``(a, b, bits)``: index pairs that join every image to the others within the
        threshold (close distinct hashes' first holders, and each later holder of a hash to
        its first), and each image's least distance to another image (64: none close).
    """
    unique, inverse = np.unique(hashes, return_inverse=True)
    inverse = inverse.ravel()
    ua, ub = hamming_pairs(unique, threshold)
    first = np.full(len(unique), -1, np.int64)  # the first image holding each hash
    first[inverse[::-1]] = np.arange(len(hashes))[::-1]
    distance = np.bitwise_count(unique[ua] ^ unique[ub]).astype(np.int64)
    best = np.where(np.bincount(inverse, minlength=len(unique)) > 1, 0, 64)
    np.minimum.at(best, ua, distance)
    np.minimum.at(best, ub, distance)
    twin = np.flatnonzero(first[inverse] != np.arange(len(hashes)))
    a = np.concatenate([first[ua], first[inverse[twin]]])
    return a, np.concatenate([first[ub], twin]), best[inverse]


def _keep_rank(pixels: np.ndarray, eligible: np.ndarray | None) -> np.ndarray:
    """Rank of each image for keeping: eligible first, larger resolution, lower position."""
    barred = np.zeros(len(pixels), bool) if eligible is None else ~np.asarray(eligible, bool)
    order = np.lexsort((np.arange(len(pixels)), -pixels, barred))
    rank = np.empty(len(pixels), dtype=np.int64)
    rank[order] = np.arange(len(pixels))
    return rank


def cluster_images(
    phash: np.ndarray,
    sha256: Sequence[str] | np.ndarray,
    pixels: np.ndarray,
    *,
    threshold: int | None = PHASH_THRESHOLD,
    eligible: np.ndarray | None = None,
    links: tuple[np.ndarray, np.ndarray] | None = None,
) -> Clusters:
    """Cluster images by identical bytes and, unless ``threshold`` is None, close hashes.

    Args:
        phash: Each image's 64-bit perceptual hash (int64 or uint64), in row order.
        sha256: Each image's content digest, or any key equal exactly for equal digests
            (integer codes save a Python string per image).
        pixels: Each image's width x height.
        threshold: Largest phash Hamming distance of perceptual duplicates; None clusters
            exact duplicates only.
        eligible: Images to prefer as the kept one (another is kept only in a cluster with
            no eligible image), for example those passing the policy's signal rules;
            None: all.
        links: More pairs of image indices to join (semantic duplicates).

    Returns:
        The clusters, with the kept image of each.
    """
    n = len(sha256)
    rank = _keep_rank(np.asarray(pixels, dtype=np.int64), eligible)
    by_rank = np.argsort(rank)  # image index of each rank
    uf = _UnionFind(n)  # over ranks: a cluster's root is its best-ranked image
    if threshold is not None:
        a, b, _ = perceptual_links(np.asarray(phash).astype(np.uint64), threshold)
        uf.union_pairs(rank[a], rank[b])
    if links is not None:
        uf.union_pairs(rank[np.asarray(links[0])], rank[np.asarray(links[1])])
    _, groups = np.unique(np.asarray(sha256), return_inverse=True)
    order = np.argsort(groups, kind="stable")  # images sharing a sha256 are one cluster
    same = groups[order][1:] == groups[order][:-1]
    uf.union_pairs(rank[order[:-1][same]], rank[order[1:][same]])
    roots = uf.roots()  # root rank per rank
    cluster = by_rank[roots[rank]]
    _, inverse, counts = np.unique(cluster, return_inverse=True, return_counts=True)
    return Clusters(cluster=cluster, size=counts[inverse])


#: Default least estimated Jaccard similarity of near-duplicate texts (MinHash).
TEXT_THRESHOLD = 0.7


def _lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Datasketch's band count and width for ``threshold`` (its own optimisation)."""
    from datasketch import MinHashLSH

    # Tuned for a lower similarity, weighted against misses: a few more candidates to
    # confirm, far fewer near-duplicates lost (one word in 40 changed: 0.85).
    lsh = MinHashLSH(threshold=threshold * 0.7, num_perm=num_perm, weights=(0.2, 0.8))
    return int(lsh.b), int(lsh.r)


def _row_keys(values: np.ndarray) -> np.ndarray:
    """A 64-bit key per row of ``values`` (equal rows, equal keys; collisions are rare)."""
    key = np.zeros(len(values), np.uint64)
    with np.errstate(over="ignore"):
        for column in values.T:
            key = key * np.uint64(0x9E3779B97F4A7C15) + column.astype(np.uint64)
    return key


def _band_pairs(
    signatures: np.ndarray, bands: int, width: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i < j)`` agreeing on a band's key, confirmed as they are found."""

    def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (signatures[a] == signatures[b]).mean(axis=1) >= threshold

    parts = [
        same_key_pairs(_row_keys(signatures[:, band * width : (band + 1) * width]), close)
        for band in range(bands)
    ]
    return unique_pairs(
        np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    )


def cluster_texts(minhashes: np.ndarray, *, threshold: float = TEXT_THRESHOLD) -> Clusters:
    """Cluster documents whose MinHash signatures estimate a Jaccard of at least ``threshold``.

    Locality-sensitive hashing with datasketch's ``MinHashLSH`` parameters (bands of the
    signature, so not all pairs are compared; tuned for 0.7 x ``threshold`` so few true
    pairs are missed), banded with numpy over the signature matrix: no Python object per
    document. Identical signatures are joined first; each candidate pair is confirmed on
    the estimated similarity (the share of equal values). Each cluster keeps its first row
    (the first ingested).

    Args:
        minhashes: ``[N, num_perm]`` uint32 signatures
            (:func:`vlm_lake.curation.text_signals.minhash`), in row order.
        threshold: Least estimated Jaccard similarity, in (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} must be in (0, 1]")
    signatures = np.asarray(minhashes, dtype=np.uint32)
    n, num_perm = signatures.shape if signatures.ndim == 2 else (0, 1)
    uf = _UnionFind(n)
    if n:
        _, inverse = np.unique(_row_keys(signatures), return_inverse=True)
        first = np.full(inverse.max() + 1, n, np.int64)
        np.minimum.at(first, inverse, np.arange(n))
        # the same signature as an earlier row (checked: a key collision is not a twin)
        twin = np.flatnonzero(first[inverse] != np.arange(n))
        twin = twin[(signatures[twin] == signatures[first[inverse[twin]]]).all(axis=1)]
        uf.union_pairs(first[inverse[twin]], twin)
        rest = np.setdiff1d(np.arange(n), twin)  # one row per distinct signature
        a, b = _band_pairs(signatures[rest], *_lsh_bands(threshold, num_perm), threshold)
        uf.union_pairs(rest[a], rest[b])
    cluster = uf.roots()  # the root is the lowest row: the first ingested is kept
    _, inverse, counts = np.unique(cluster, return_inverse=True, return_counts=True)
    return Clusters(cluster=cluster, size=counts[inverse])
