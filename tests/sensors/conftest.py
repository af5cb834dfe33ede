"""Sensor-tier fixtures: the project's resources on the S3 test server, one-tick helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sensor_helpers import IMAGES_PREFIX, TEXTS_KEY, Tick, evaluate

from resources import LakeResource, ObjectStoreResource


@pytest.fixture()
def sensor_resources(bucket: str, object_store_resource: ObjectStoreResource) -> dict[str, Any]:
    """The sensor's two resources for the seed's layout in a fresh bucket."""
    return {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/{IMAGES_PREFIX}",
            raw_texts_uri=f"s3://{bucket}/{TEXTS_KEY}",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": object_store_resource,
    }


@pytest.fixture()
def tick(sensor_resources: dict[str, Any]) -> Callable[[str | None], Tick]:
    """``tick(cursor)``: one evaluation against the S3 test bucket."""
    return lambda cursor=None: evaluate(cursor, sensor_resources)
