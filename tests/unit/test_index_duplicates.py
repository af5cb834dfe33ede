"""Near-duplicates through the vector index: every image queried, locally and as Spark tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest
from test_similarity import _at_cosine, _reference_count, _table

from vlm_lake.checks.features import check_features
from vlm_lake.features.index_duplicates import index_near_duplicates, index_pairs
from vlm_lake.features.near_duplicates import near_duplicate_pairs
from vlm_lake.features.vector_index import ensure_vector_index

DIM = 128
THRESHOLD = 0.95


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], np.ndarray]:
    """600 random rows with an IVF_PQ index, six planted pairs and a zero vector."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((600, DIM))
    for a, b, cos in [
        (1, 2, 0.999),
        (10, 300, 0.99),
        (50, 599, 0.97),
        (70, 71, 0.951),
        (100, 101, 0.94),
        (200, 400, 0.5),
    ]:
        vectors[b] = _at_cosine(vectors[a], cos, rng)
    vectors[500] = 0.0
    ids = [f"img{i:04d}" for i in range(600)]
    uri = str(tmp_path_factory.mktemp("index") / "features.lance")
    lance.write_dataset(_table(ids, vectors), uri, max_rows_per_file=150)
    assert ensure_vector_index(uri, min_rows=256).state == "created"
    return uri, ids, vectors


def test_every_image_through_the_index_finds_the_exact_pairs(
    indexed: tuple[str, list[str], np.ndarray],
) -> None:
    uri, ids, vectors = indexed
    ds = lance.dataset(uri)
    found = index_near_duplicates(ds, threshold=THRESHOLD)
    brute = near_duplicate_pairs(ds, threshold=THRESHOLD)
    assert found.count == brute.count == _reference_count(vectors, ids, THRESHOLD) == 4
    assert [(a, b) for a, b, _ in found.examples] == [(a, b) for a, b, _ in brute.examples]
    assert found.examples[0][:2] == ("img0001", "img0002")
    assert found.examples[0][2] == pytest.approx(0.999, abs=1e-5)  # exact, not the PQ code
    assert found.queries == found.rows == 600


def test_spark_tasks_give_the_same_pairs(
    spark: Any, indexed: tuple[str, list[str], np.ndarray]
) -> None:
    uri, _, _ = indexed
    ds = lance.dataset(uri)
    local = index_near_duplicates(ds, threshold=THRESHOLD)
    # 6 tasks of 100 rows: the task size travels with the task to the executors
    on_spark = index_near_duplicates(
        ds, threshold=THRESHOLD, spark=lambda: spark, rows_per_task=100
    )
    assert (on_spark.count, on_spark.examples) == (local.count, local.examples)
    # the curation's form: every pair itself, the same from Spark tasks
    pairs = index_pairs(ds, threshold=THRESHOLD)
    assert len(pairs) == local.count and local.examples[0] in pairs
    assert index_pairs(ds, threshold=THRESHOLD, spark=lambda: spark, rows_per_task=100) == pairs


def test_the_check_uses_the_index_when_there_is_one(
    tmp_path: Path, indexed: tuple[str, list[str], np.ndarray]
) -> None:
    uri, ids, _ = indexed
    images = lance.write_dataset(
        {"image_id": ids, "sha256": [f"sha-{i}" for i in ids]}, str(tmp_path / "images.lance")
    )
    outcomes = check_features(
        lance.dataset(uri),
        images,
        model="resnet50",
        weights="IMAGENET1K_V2",
        random_init=False,
        threshold=THRESHOLD,
    )
    near = next(o for o in outcomes if o.name == "near_duplicate_images")
    assert not near.passed and near.observed == 4
    assert "through the vector index" in near.details["compared"]
