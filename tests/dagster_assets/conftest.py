"""Asset-tier fixtures: the project's resources pointed at the S3 test server."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import S3_KEY, S3_REGION, S3_SECRET

from resources import LakeResource, ObjectStoreResource, SparkResource


@pytest.fixture()
def s3_resources(s3_endpoint: str, bucket: str, spark: Any) -> dict[str, Any]:
    """Resources for the seed's layout in a fresh bucket: raw data in, lake out."""
    return {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/lanceData/",
            raw_texts_uri=f"s3://{bucket}/Lance/data/testdata.json",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": ObjectStoreResource(
            endpoint_url=s3_endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            max_attempts=2,
        ),
        # The session already exists (shared fixture); getOrCreate hands it back.
        "spark": SparkResource(master="local[2]"),
    }
