"""Asset-tier fixtures: the project's resources pointed at the S3 test server."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import feature_precision_setting

from resources import FeatureModelResource, LakeResource, SparkResource


@pytest.fixture()
def s3_resources(bucket: str, spark: Any, object_store_resource: Any) -> dict[str, Any]:
    """Resources for the seed's layout in a fresh bucket: raw data in, lake out."""
    return {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/lanceData/",
            raw_texts_uri=f"s3://{bucket}/Lance/data/testdata.json",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": object_store_resource,
        # The session already exists (shared fixture); getOrCreate hands it back.
        "spark": SparkResource(master="local[2]"),
        # random-init weights; FEATURES_PRECISION forces a precision for the whole suite
        "feature_model": FeatureModelResource(precision=feature_precision_setting()),
    }
