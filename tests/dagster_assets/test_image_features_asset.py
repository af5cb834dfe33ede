"""``image_features`` materialized with the project's resources on the S3 test server."""

from __future__ import annotations

import io
from typing import Any

import lance
import numpy as np
import pytest
import torch
from dagster import AssetCheckSeverity, materialize
from helpers import feature_precision_setting, sha256, upload_seed_example

from assets import image_features, ingest_images_asset
from resources import FeatureModelResource
from vlm_lake.features.model import MODEL_NAME, resolve_precision
from vlm_lake.features.resnet import resnet50
from vlm_lake.lake import LakeLayout
from vlm_lake.tables import publish

ASSETS = [ingest_images_asset, image_features]


def _features_event(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "image_features"
    ]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    checks = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.to_user_string() == "image_features"
    }
    return meta, checks


def _upload_state_dict(s3_store: Any, bucket: str, key: str, state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    s3_store.client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return buffer.getvalue()


def test_features_without_weights_say_random_init_and_rerun_computes_nothing(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    result = materialize(ASSETS, resources=s3_resources)
    assert result.success
    meta, checks = _features_event(result)
    assert meta["weights"] == "random-init"
    assert meta["weights_identity"] == "random-init:seed=0"
    assert meta["model"] == MODEL_NAME
    resolved = resolve_precision(feature_precision_setting(), "cpu")  # bf16 where the CPU has it
    assert (meta["device"], meta["precision"]) == ("cpu", resolved)
    assert (meta["computed"], meta["reused"], meta["deleted"]) == (3, 0, 0)
    assert meta["dagster/row_count"] == 3 and meta["published"] is True
    assert meta["vector_index"] == "none: 3 rows < 5000 (flat search)"
    assert meta["images_per_second"] > 0 and meta["tasks"] >= 1
    for name in ("one_row_per_image", "features_finite", "single_model"):
        assert checks[name].passed, name
    near = checks["near_duplicate_images"]
    assert near.severity == AssetCheckSeverity.WARN
    # random weights make every pair of the 3 photos look alike, and the check says why
    assert not near.passed and near.metadata["observed"].value == 3
    assert "random-init" in near.metadata["note"].value
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    storage = s3_store.storage_options(layout.root)
    ds = publish.open_published(layout.image_features, storage)
    table = ds.to_table()
    assert sorted(table.column("image_id").to_pylist()) == ["image1", "image2", "image3"]
    vectors = np.stack(table.column("features").to_numpy(zero_copy_only=False))
    assert vectors.shape == (3, 2048) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and (vectors >= 0).all()  # after ReLU + average pool
    assert set(table.column("weights").to_pylist()) == {"random-init:seed=0"}

    again = materialize(ASSETS, resources=s3_resources)
    meta2, _ = _features_event(again)
    assert (meta2["computed"], meta2["reused"], meta2["committed"]) == (0, 3, False)
    assert meta2["lance/version"] == meta["lance/version"]


def test_weights_from_s3_replace_every_vector(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ASSETS, resources=s3_resources).success
    payload = _upload_state_dict(s3_store, bucket, "models/r50.pth", resnet50(9).state_dict())
    uri = f"s3://{bucket}/models/r50.pth"
    resources = {**s3_resources, "feature_model": FeatureModelResource(weights_uri=uri)}
    result = materialize(ASSETS, resources=resources)
    assert result.success
    meta, checks = _features_event(result)
    assert meta["weights"] == uri
    assert meta["weights_identity"] == f"sha256:{sha256(payload)}"
    assert (meta["computed"], meta["reused"]) == (3, 0)
    assert "note" not in checks["near_duplicate_images"].metadata
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    ds = publish.open_published(layout.image_features, s3_store.storage_options(layout.root))
    assert set(ds.to_table(columns=["weights"]).column("weights").to_pylist()) == {
        f"sha256:{sha256(payload)}"
    }


def test_nan_features_fail_the_blocking_check_and_stay_unpublished(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ASSETS, resources=s3_resources).success
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    storage = s3_store.storage_options(layout.root)
    published_before = publish.published(layout.image_features, storage)
    assert published_before is not None
    broken = resnet50(0).state_dict()
    broken["layer4.2.conv3.weight"][0, 0, 0, 0] = float("nan")  # a bad training checkpoint
    _upload_state_dict(s3_store, bucket, "models/nan.pth", broken)
    resources = {
        **s3_resources,
        "feature_model": FeatureModelResource(weights_uri=f"s3://{bucket}/models/nan.pth"),
    }
    result = materialize(ASSETS, resources=resources, raise_on_error=False)
    assert not result.success
    meta, checks = _features_event(result)
    assert not checks["features_finite"].passed
    assert checks["features_finite"].metadata["observed"].value == 3
    assert meta["published"] is False
    after = publish.published(layout.image_features, storage)
    assert after is not None and after.version == published_before.version
    latest = lance.dataset(layout.image_features, storage_options=storage)
    assert latest.version > published_before.version  # the candidate exists, unpublished


def test_weights_that_do_not_fit_resnet50_fail_with_the_uri(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    _upload_state_dict(s3_store, bucket, "models/small.pth", {"conv1.weight": torch.zeros(1)})
    uri = f"s3://{bucket}/models/small.pth"
    resources = {**s3_resources, "feature_model": FeatureModelResource(weights_uri=uri)}
    with pytest.raises(ValueError, match=r"small\.pth.*does not match torchvision's resnet50"):
        materialize(ASSETS, resources=resources)
