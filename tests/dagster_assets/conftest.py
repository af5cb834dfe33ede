"""Asset-tier fixtures: the project's resources pointed at the S3 test server."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import feature_precision_setting, seed_layout_resources

from resources import FeatureModelResource, SparkResource


@pytest.fixture()
def s3_resources(bucket: str, spark: Any, object_store_resource: Any) -> dict[str, Any]:
    """Resources for the seed's layout in a fresh bucket: raw data in, lake out."""
    return {
        **seed_layout_resources(bucket, object_store_resource),
        # The session already exists (shared fixture); getOrCreate hands it back.
        "spark": SparkResource(master="local[2]"),
        # random-init weights; FEATURES_PRECISION forces a precision for the whole suite
        "feature_model": FeatureModelResource(precision=feature_precision_setting()),
    }
