"""Duplicate clusters: exact and perceptual, equal to all-pairs, one image kept per cluster."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pytest
from helpers import hard_case_images

from vlm_lake.curation.clusters import cluster_images, hamming_pairs
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore


def _brute_force_partition(hashes: np.ndarray, sha: list[str], threshold: int) -> set:
    """Connected components of all pairs within ``threshold`` bits or with equal sha256."""
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    u = hashes.astype(np.uint64)
    for i in range(n):
        close = np.flatnonzero(np.bitwise_count(u[i] ^ u[i + 1 :]) <= threshold) + i + 1
        same = [j for j in range(i + 1, n) if sha[j] == sha[i]]
        for j in [*close.tolist(), *same]:
            parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return {frozenset(g) for g in groups.values()}


def _planted(n: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Random hashes with planted near-duplicates (1-8 bits flipped) and exact copies."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.int64) * 2 + rng.integers(0, 2, size=n)
    sha = [f"s{i}" for i in range(n)]
    for i in range(0, n, 7):  # a near-duplicate of row i at row i + 1
        bits = rng.choice(64, size=int(rng.integers(1, 9)), replace=False)
        flip = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64))
        if i + 1 < n:
            hashes[i + 1] = (hashes[i].astype(np.uint64) ^ flip).astype(np.int64)
    for i in range(3, n, 11):  # byte-identical copies
        sha[i] = sha[i - 3]
        hashes[i] = hashes[i - 3]
    pixels = rng.integers(100, 10_000, size=n)
    return hashes, sha, pixels


@pytest.mark.parametrize("threshold", [0, 3, 6, 10])
def test_clusters_equal_the_all_pairs_components(threshold: int) -> None:
    hashes, sha, pixels = _planted(1500, seed=threshold)
    clusters = cluster_images(hashes, sha, pixels, threshold=threshold)
    ours: dict[int, set[int]] = {}
    for i, c in enumerate(clusters.cluster.tolist()):
        ours.setdefault(c, set()).add(i)
    assert {frozenset(g) for g in ours.values()} == _brute_force_partition(hashes, sha, threshold)
    for members in ours.values():  # the kept image: largest resolution, then first row
        kept = min(members, key=lambda i: (-pixels[i], i))
        assert all(clusters.cluster[i] == kept for i in members)
        assert all(clusters.size[i] == len(members) for i in members)
    assert len(clusters.duplicates()) == len(hashes) - len(ours)


def test_hamming_pairs_finds_each_close_pair_once() -> None:
    base = np.array([0, 0b111, 0b1111111, 2**63, 2**63 + 1], dtype=np.uint64)
    a, b = hamming_pairs(base, 3)
    # distances: 0-1: 3, 0-3: 1, 0-4: 2, 1-4: 3, 3-4: 1; every other pair 4 or more
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [
        (0, 1),
        (0, 3),
        (0, 4),
        (1, 4),
        (3, 4),
    ]
    with pytest.raises(ValueError, match="threshold=64 must be 0..63"):
        hamming_pairs(base, 64)


def test_hard_cases_cluster_around_the_largest_first_ingested_photo(tmp_path: Path) -> None:
    cases = hard_case_images() | {"original_copy": hard_case_images()["original"]}
    folder = tmp_path / "raw"
    folder.mkdir()
    for name, data in cases.items():
        (folder / f"{name}.jpg").write_bytes(data)
    uri = str(tmp_path / "images.lance")
    ingest_images(ObjectStore(), str(folder), uri, ImageIngestOptions(engine="local"))
    table = lance.dataset(uri).to_table(columns=["image_id", "phash", "sha256", "width", "height"])
    rows = table.to_pylist()
    ids = [r["image_id"] for r in rows]
    pixels = np.array([r["width"] * r["height"] for r in rows])
    hashes = np.array([r["phash"] for r in rows], dtype=np.int64)
    clusters = cluster_images(hashes, [r["sha256"] for r in rows], pixels)
    (group, *others) = clusters.groups()
    assert others == []  # flat grey and the other photo stand alone
    members = {ids[i] for i in group}
    assert members == set(cases) - {"flat_grey", "other_photo"}
    # the rule: the largest (451x300: all but the resized, cropped and tiny ones), then the
    # first row (a bad-exposure copy can be kept; the policy's signal rules exclude it)
    best = max(pixels[i] for i in group)
    largest = sorted(i for i in group if pixels[i] == best)
    assert {ids[i] for i in largest} == members - {"resized", "cropped", "tiny"}
    assert group[0] == largest[0]
    exact = cluster_images(hashes, [r["sha256"] for r in rows], pixels, threshold=None)
    assert [sorted(ids[i] for i in g) for g in exact.groups()] == [["original", "original_copy"]]
