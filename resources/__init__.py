"""Dagster resources: object store (S3/OSS/local), Spark, and the lake's locations."""

from __future__ import annotations

from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource

__all__ = ["LakeResource", "ObjectStoreResource", "SparkResource"]
