"""``check_features``: each check passing on good features and failing with its evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest

from vlm_lake import checks
from vlm_lake.tables.contracts import FEATURES_SCHEMA, IMAGE_SCHEMA

MODEL, WEIGHTS = "resnet50-test", "sha256:abc"


def _images(tmp_path: Path, ids: list[str]) -> Any:
    rows = [
        {
            "image_id": i,
            "image_data": i.encode(),
            "source_uri": f"/raw/{i}.jpg",
            "source_etag": "e",
            "sha256": f"sha-{i}",
            "size_bytes": 1,
            "format": "jpeg",
            "width": 1,
            "height": 1,
        }
        for i in ids
    ]
    return lance.write_dataset(pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA), tmp_path / "i")


def _features(tmp_path: Path, rows: list[tuple[str, str, np.ndarray, str]]) -> Any:
    vectors = np.stack([r[2] for r in rows]).astype(np.float32)
    table = pa.Table.from_arrays(
        [
            pa.array([r[0] for r in rows], pa.string()),
            pa.array([r[1] for r in rows], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 2048),
            pa.array([MODEL] * len(rows), pa.string()),
            pa.array([r[3] for r in rows], pa.string()),
            pa.array(["fp32"] * len(rows), pa.string()),
        ],
        schema=FEATURES_SCHEMA,
    )
    return lance.write_dataset(table, tmp_path / "f")


def _by_name(outcomes: list[checks.CheckOutcome]) -> dict[str, checks.CheckOutcome]:
    return {o.name: o for o in outcomes}


@pytest.fixture()
def vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)  # random 2048-d vectors: cosine about 0 between them
    return {i: rng.normal(size=2048) for i in ("a", "b", "c", "d")}


def test_good_features_pass_every_check(tmp_path: Path, vectors: dict[str, np.ndarray]) -> None:
    images = _images(tmp_path, list(vectors))
    ds = _features(tmp_path, [(i, f"sha-{i}", v, WEIGHTS) for i, v in vectors.items()])
    found = _by_name(
        checks.check_features(ds, images, model=MODEL, weights=WEIGHTS, random_init=False)
    )
    assert list(found) == [
        "one_row_per_image",
        "features_finite",
        "single_model",
        "near_duplicate_images",
    ]
    assert all(o.passed for o in found.values())
    assert [o.blocking for o in found.values()] == [True, True, True, False]
    assert found["near_duplicate_images"].details["compared"] == "all pairs of 4 images"
    assert "note" not in found["near_duplicate_images"].details


def test_each_check_fails_with_its_evidence(tmp_path: Path, vectors: dict[str, np.ndarray]) -> None:
    images = _images(tmp_path, ["a", "b", "c", "d", "e"])  # e has no features
    nan = vectors["c"].copy()
    nan[7] = np.nan
    near = vectors["a"] + 0.05 * vectors["b"]  # cosine with a: about 0.999
    ds = _features(
        tmp_path,
        [
            ("a", "sha-a", vectors["a"], WEIGHTS),
            ("b", "sha-OLD", vectors["b"], WEIGHTS),  # stale: the image changed since
            ("c", "sha-c", nan, WEIGHTS),
            ("d", "sha-d", near, "random-init:seed=0"),  # other weights
            ("x", "sha-x", vectors["d"], WEIGHTS),  # an image that is gone
        ],
    )
    found = _by_name(
        checks.check_features(ds, images, model=MODEL, weights=WEIGHTS, random_init=True)
    )
    rows = found["one_row_per_image"]
    assert not rows.passed and rows.blocking
    assert rows.observed == {
        "rows": 5, "images": 5, "missing": 1, "extra": 1, "stale": 1, "duplicated": 0
    }  # fmt: skip
    assert (rows.details["missing"], rows.details["extra"], rows.details["stale"]) == (
        ["e"],
        ["x"],
        ["b"],
    )
    finite = found["features_finite"]
    assert not finite.passed and finite.observed == 1 and finite.details["image_ids"] == ["c"]
    single = found["single_model"]
    assert not single.passed and single.details["other_models"] == {
        f"{MODEL} | random-init:seed=0": 1
    }
    dup = found["near_duplicate_images"]
    assert not dup.passed and not dup.blocking and dup.observed == 1
    [pair] = dup.details["pairs"]
    assert (pair["image_a"], pair["image_b"]) == ("a", "d")
    expected = float(near @ vectors["a"] / np.linalg.norm(near) / np.linalg.norm(vectors["a"]))
    assert pair["cosine"] == pytest.approx(expected, abs=1e-5) and pair["cosine"] >= 0.98
    assert "random-init" in dup.details["note"]
    assert checks.blocking_failures(found.values()) == [rows, finite, single]
