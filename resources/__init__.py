"""Dagster resources: object store (S3/OSS/local), Spark, the lake's locations, the model."""

from __future__ import annotations

from resources.feature_model import FeatureModelResource
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from resources.upload_events import UploadEventsResource

__all__ = [
    "FeatureModelResource",
    "LakeResource",
    "ObjectStoreResource",
    "SparkResource",
    "UploadEventsResource",
]
