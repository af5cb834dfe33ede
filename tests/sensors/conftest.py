"""Sensor-tier fixtures: the project's resources on the S3 test server, one-tick helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sensor_helpers import Tick, evaluate, seed_layout_resources

from resources import ObjectStoreResource


@pytest.fixture()
def sensor_resources(bucket: str, object_store_resource: ObjectStoreResource) -> dict[str, Any]:
    """The sensor's resources for the seed's layout in a fresh bucket (no event queue)."""
    return seed_layout_resources(bucket, object_store_resource)


@pytest.fixture()
def tick(sensor_resources: dict[str, Any]) -> Callable[[str | None], Tick]:
    """``tick(cursor)``: one evaluation against the S3 test bucket."""
    return lambda cursor=None: evaluate(cursor, sensor_resources)
