"""Near-duplicate counting, the vector index and similar-image search on real Lance data."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from vlm_lake.features.near_duplicates import NearDuplicates, near_duplicate_pairs
from vlm_lake.features.vector_index import VectorIndexReport, ensure_vector_index, similar_images
from vlm_lake.tables.lance_io import merge_batches

DIM = 2048


def _table(ids: list[str], vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    return pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "image_sha256": pa.array([f"sha-{i}" for i in ids], pa.string()),
            "features": pa.FixedSizeListArray.from_arrays(flat, dim),
            "model": pa.array(["resnet50"] * len(ids), pa.string()),
            "weights": pa.array(["IMAGENET1K_V2"] * len(ids), pa.string()),
            "precision": pa.array(["fp32"] * len(ids), pa.string()),
        }
    )


def _write(path: Path, ids: list[str], vectors: np.ndarray, **kwargs: object) -> str:
    lance.write_dataset(_table(ids, vectors), str(path), **kwargs)
    return str(path)


def _at_cosine(u: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A vector whose cosine with ``u`` is exactly ``cos`` (in float64), at a random scale."""
    unit = u / np.linalg.norm(u)
    other = rng.standard_normal(u.shape[0])
    other -= other.dot(unit) * unit
    other /= np.linalg.norm(other)
    return (cos * unit + math.sqrt(1.0 - cos * cos) * other) * rng.uniform(0.5, 3.0)


def _cosines(vectors: np.ndarray) -> np.ndarray:
    x = vectors.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    unit = x / np.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit.T


def _reference_count(
    vectors: np.ndarray, ids: list[str], threshold: float, queries: set[str] | None = None
) -> int:
    """Unordered pairs of distinct non-zero rows, one of them a query, at cosine >= threshold."""
    cos = _cosines(vectors)
    nonzero = np.linalg.norm(vectors, axis=1) > 0
    is_query = np.array([queries is None or i in queries for i in ids])
    upper = np.triu(np.ones_like(cos, dtype=bool), k=1)
    involved = is_query[:, None] | is_query[None, :]
    pairs = upper & involved & nonzero[:, None] & nonzero[None, :] & (cos >= threshold)
    return int(pairs.sum())


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], np.ndarray]:
    """400 random rows in 4 fragments with four planted pairs at known cosines."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, DIM))
    vectors[11] = _at_cosine(vectors[10], 0.99, rng)
    vectors[101] = _at_cosine(vectors[250], 0.981, rng)
    vectors[301] = _at_cosine(vectors[300], 0.979, rng)  # just below the default threshold
    vectors[399] = vectors[5]  # an exact duplicate: cosine 1.0
    ids = [f"img{i:04d}" for i in range(400)]
    uri = _write(
        tmp_path_factory.mktemp("planted") / "f.lance", ids, vectors, max_rows_per_file=100
    )
    return uri, ids, vectors


def test_planted_pairs_are_counted_exactly(planted, caplog: pytest.LogCaptureFixture) -> None:
    uri, ids, vectors = planted
    ds = lance.dataset(uri)
    assert len(ds.get_fragments()) == 4

    with caplog.at_level(logging.INFO, logger="vlm_lake.features.near_duplicates"):
        found = near_duplicate_pairs(ds)

    assert isinstance(found, NearDuplicates)
    assert (found.threshold, found.count, found.queries, found.rows) == (0.98, 3, 400, 400)
    assert found.count == _reference_count(vectors, ids, 0.98)
    assert [(a, b) for a, b, _ in found.examples] == [
        ("img0005", "img0399"),
        ("img0010", "img0011"),
        ("img0101", "img0250"),
    ]
    cos = _cosines(vectors)
    for (_, _, value), (i, j) in zip(found.examples, [(5, 399), (10, 11), (101, 250)], strict=True):
        assert value == pytest.approx(cos[i, j], abs=1e-5)
        assert value == round(value, 6)
    assert found.examples[0][2] == 1.0
    assert found.examples[2][2] == pytest.approx(0.981, abs=1e-5)
    assert "3 pairs with cosine >= 0.98 among 400 queries x 400 rows" in caplog.text

    lower = near_duplicate_pairs(ds, threshold=0.975)
    assert lower.count == 4
    assert ("img0300", "img0301") == lower.examples[-1][:2]
    assert lower.examples[-1][2] == pytest.approx(0.979, abs=1e-5)


def test_query_ids_restrict_and_count_each_pair_once(planted) -> None:
    uri, ids, vectors = planted
    ds = lance.dataset(uri)

    one_side = near_duplicate_pairs(ds, query_ids=["img0010", "img0399", "img0042"])
    assert (one_side.count, one_side.queries, one_side.rows) == (2, 3, 400)
    assert [(a, b) for a, b, _ in one_side.examples] == [
        ("img0005", "img0399"),
        ("img0010", "img0011"),
    ]

    both_sides = near_duplicate_pairs(ds, query_ids={"img0010", "img0011", "img0005", "img0399"})
    assert both_sides.count == 2  # each pair has both rows in the query set, counted once
    assert both_sides.queries == 4

    nobody = near_duplicate_pairs(ds, query_ids=["img0042", "not-an-id"])
    assert (nobody.count, nobody.examples, nobody.queries) == (0, [], 1)

    low = {"img0003", "img0250", "img0360"}
    assert near_duplicate_pairs(ds, query_ids=low, threshold=0.03).count == _reference_count(
        vectors, ids, 0.03, low
    )


def test_zero_vectors_match_nothing_and_self_pairs_never_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((32, DIM))
    vectors[[4, 20]] = 0.0
    ids = [f"r{i:02d}" for i in range(32)]
    ds = lance.dataset(_write(tmp_path / "z.lance", ids, vectors))

    everything = near_duplicate_pairs(ds, threshold=-0.999, max_examples=0)
    assert everything.count == 30 * 29 // 2  # every pair of the 30 non-zero rows, once
    assert everything.examples == []

    assert near_duplicate_pairs(ds, query_ids=["r04"], threshold=-0.999).count == 0
    # A query row against everything: 29 partners, never itself.
    assert near_duplicate_pairs(ds, query_ids=["r07"], threshold=-0.999).count == 29
    assert near_duplicate_pairs(ds, query_ids=["r07", "r08"], threshold=-0.999).count == 29 + 28


def test_small_blocks_give_the_same_answer_over_fragments_and_deletions(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((150, DIM))
    vectors[77] = _at_cosine(vectors[3], 0.995, rng)
    ids = [f"b{i:03d}" for i in range(150)]
    uri = _write(tmp_path / "b.lance", ids, vectors, max_rows_per_file=40)
    lance.dataset(uri).delete("image_id IN ('b010', 'b050', 'b051', 'b149')")
    ds = lance.dataset(uri)
    keep = [i for i, name in enumerate(ids) if name not in {"b010", "b050", "b051", "b149"}]
    live_ids = [ids[i] for i in keep]
    live = vectors[keep]
    cos = _cosines(live)
    # A threshold about 0.04 with no pair within float32 rounding of it.
    threshold = next(float(t) for t in np.linspace(0.04, 0.05, 101) if np.abs(cos - t).min() > 1e-5)

    expected = _reference_count(live, live_ids, threshold)
    assert expected > 100
    big = near_duplicate_pairs(ds, threshold=threshold, max_examples=5, block_rows=4096)
    small = near_duplicate_pairs(ds, threshold=threshold, max_examples=5, block_rows=3)
    assert big.count == small.count == expected
    assert big.rows == small.rows == 146
    assert [e[:2] for e in small.examples] == [e[:2] for e in big.examples]
    assert small.examples[0][:2] == ("b003", "b077")
    for (_, _, x), (_, _, y) in zip(small.examples, big.examples, strict=True):
        assert x == pytest.approx(y, abs=2e-6)

    queries = {"b000", "b003", "b004", "b077", "b100", "b148", "b010"}
    expected_q = _reference_count(live, live_ids, threshold, queries)
    for block in (1, 2, 4096):
        got = near_duplicate_pairs(ds, query_ids=queries, threshold=threshold, block_rows=block)
        assert (got.count, got.queries) == (expected_q, 6)


def test_max_examples_caps_the_list_not_the_count(planted) -> None:
    ds = lance.dataset(planted[0])
    two = near_duplicate_pairs(ds, max_examples=2)
    assert two.count == 3
    assert [(a, b) for a, b, _ in two.examples] == [("img0005", "img0399"), ("img0010", "img0011")]
    none = near_duplicate_pairs(ds, max_examples=0)
    assert (none.count, none.examples) == (3, [])


def test_near_duplicate_arguments_are_validated(planted) -> None:
    ds = lance.dataset(planted[0])
    for bad in (-1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"threshold=.*-1 < threshold <= 1"):
            near_duplicate_pairs(ds, threshold=bad)
    with pytest.raises(ValueError, match=r"block_rows=0 .*>= 1"):
        near_duplicate_pairs(ds, block_rows=0)
    with pytest.raises(ValueError, match=r"max_examples=-1 "):
        near_duplicate_pairs(ds, max_examples=-1)
    with pytest.raises(ValueError, match=r"column='image_sha256' has type string; allowed: a fix"):
        near_duplicate_pairs(ds, column="image_sha256")
    with pytest.raises(ValueError, match=r"column='embedding' is not in the dataset"):
        near_duplicate_pairs(ds, column="embedding")
    with pytest.raises(ValueError, match=r"key='docid' is not in the dataset"):
        near_duplicate_pairs(ds, key="docid")
    with pytest.raises(ValueError, match=r"query_ids='img0001' is a string"):
        near_duplicate_pairs(ds, query_ids="img0001")


def _neighbourhood(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` random rows; row 0 has neighbours n1 (cosine 0.95) and n2 (0.9)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM))
    vectors[n // 2] = _at_cosine(vectors[0], 0.95, rng)
    vectors[n - 1] = _at_cosine(vectors[0], 0.9, rng)
    ids = [f"q{i:04d}" for i in range(n)]
    ids[n // 2], ids[n - 1] = "n1", "n2"
    return ids, vectors


def test_ensure_vector_index_lifecycle(tmp_path: Path) -> None:
    ids, vectors = _neighbourhood(600, seed=5)
    uri = _write(tmp_path / "idx.lance", ids, vectors, max_rows_per_file=200)

    small = ensure_vector_index(uri, min_rows=1000)
    assert (small.state, small.rows, small.index_type, small.version) == ("none", 600, None, 1)
    assert small.describe() == "none: 600 rows < 1000 (flat search)"
    assert lance.dataset(uri).version == 1
    assert lance.dataset(uri).describe_indices() == []

    created = ensure_vector_index(uri, min_rows=256)
    assert isinstance(created, VectorIndexReport)
    assert created.state == "created"
    assert (created.index_type, created.name, created.metric) == (
        "IVF_PQ",
        "features_idx",
        "cosine",
    )
    assert (created.num_partitions, created.num_sub_vectors) == (2, 128)  # 600 // 256, 2048 / 16
    assert (created.unindexed_rows, created.rows, created.version) == (0, 600, 2)
    assert (
        created.describe() == "created IVF_PQ (2 partitions, 128 sub-vectors, cosine) on 600 rows"
    )
    ds = lance.dataset(uri)
    assert ds.version == 2
    [index] = ds.describe_indices()
    assert (index.name, list(index.field_names), index.num_rows_indexed) == (
        "features_idx",
        ["features"],
        600,
    )

    again = ensure_vector_index(uri, min_rows=256)
    assert (again.state, again.version, again.unindexed_rows) == ("current", 2, 0)
    assert again.describe().startswith("current: IVF_PQ (2 partitions")
    assert lance.dataset(uri).version == 2

    rng = np.random.default_rng(9)
    more = rng.standard_normal((50, DIM))
    lance.write_dataset(_table([f"new{i}" for i in range(50)], more), uri, mode="append")
    assert lance.dataset(uri).stats.index_stats("features_idx")["num_unindexed_rows"] == 50
    updated = ensure_vector_index(uri, min_rows=256)
    assert (updated.state, updated.rows, updated.newly_indexed) == ("updated", 650, 50)
    assert (updated.unindexed_rows, updated.version, updated.num_partitions) == (0, 4, 2)
    assert updated.describe().startswith("updated IVF_PQ (2 partitions, 128 sub-vectors, cosine)")
    ds = lance.dataset(uri)
    assert ds.version == 4
    assert ds.stats.index_stats("features_idx")["num_unindexed_rows"] == 0

    # An update commit rewrites the row into a new fragment the index does not cover yet.
    changed = _table(["q0003"], rng.standard_normal((1, DIM)))
    merge_batches(changed.to_batches(), uri, changed.schema, on="image_id")
    assert ensure_vector_index(uri, min_rows=256).state == "updated"
    assert ensure_vector_index(uri, min_rows=256).state == "current"


def test_ensure_vector_index_validates(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    uri = _write(tmp_path / "v.lance", [f"a{i}" for i in range(4)], rng.standard_normal((4, 20)))
    with pytest.raises(ValueError, match=r"min_rows=100 is too small; allowed: an integer >= 256"):
        ensure_vector_index(uri, min_rows=100)
    with pytest.raises(ValueError, match=r"metric='hamming' .*cosine, l2, dot"):
        ensure_vector_index(uri, min_rows=256, metric="hamming")
    with pytest.raises(ValueError, match=r"column='features' has dimension 20; allowed: a pos"):
        ensure_vector_index(uri, min_rows=256)
    with pytest.raises(ValueError, match=r"column='model' has type string"):
        ensure_vector_index(uri, min_rows=256, column="model")


def test_similar_images_flat_and_indexed(tmp_path: Path) -> None:
    ids, vectors = _neighbourhood(600, seed=21)
    uri = _write(tmp_path / "s.lance", ids, vectors, max_rows_per_file=250)
    cos = _cosines(vectors)
    order = [j for j in np.argsort(-cos[0]) if j != 0]

    flat = similar_images(lance.dataset(uri), "q0000", k=5)
    assert [name for name, _ in flat] == [ids[j] for j in order[:5]]
    assert flat[0][0] == "n1" and flat[1][0] == "n2"
    for (_, value), j in zip(flat, order[:5], strict=True):
        assert value == pytest.approx(cos[0, j], abs=1e-4)

    assert ensure_vector_index(uri, min_rows=256).state == "created"
    query = {"column": "features", "q": vectors[0].astype(np.float32), "k": 3, "metric": "cosine"}
    assert (
        "ANNSubIndex: name=features_idx" in lance.dataset(uri).scanner(nearest=query).explain_plan()
    )
    indexed = similar_images(lance.dataset(uri), "q0000", k=2)
    assert [name for name, _ in indexed] == ["n1", "n2"]
    assert indexed[0][1] == pytest.approx(cos[0, 300], abs=1e-4)
    assert indexed[1][1] == pytest.approx(cos[0, 599], abs=1e-4)
    assert indexed[0][1] == pytest.approx(0.95, abs=1e-4)

    from_neighbour = similar_images(lance.dataset(uri), "n1", k=1)
    assert from_neighbour[0][0] == "q0000"
    assert from_neighbour[0][1] == pytest.approx(0.95, abs=1e-4)

    with pytest.raises(KeyError, match=r"image_id='missing' is not in the dataset"):
        similar_images(lance.dataset(uri), "missing")
    with pytest.raises(KeyError) as quoted:
        similar_images(lance.dataset(uri), "it's")  # the quote is escaped in the filter
    assert quoted.value.args[0].startswith("""image_id="it's" is not in the dataset""")
    with pytest.raises(ValueError, match=r"k=0 is invalid"):
        similar_images(lance.dataset(uri), "q0000", k=0)
    with pytest.raises(ValueError, match=r"nprobes=0 is invalid; allowed: an integer >= 1"):
        similar_images(lance.dataset(uri), "q0000", nprobes=0)


def test_similar_images_of_a_zero_vector_is_empty(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((10, DIM))
    vectors[3] = 0.0
    ids = [f"z{i}" for i in range(10)]
    ds = lance.dataset(_write(tmp_path / "zero.lance", ids, vectors))
    assert similar_images(ds, "z3") == []
    assert "z3" not in [name for name, _ in similar_images(ds, "z0", k=9)]
