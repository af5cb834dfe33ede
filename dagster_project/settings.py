"""Resources wired from the environment (standard AWS variables, the three URIs, Spark).

Only the *presence* of a variable is checked when definitions load; values are resolved by
Dagster's ``EnvVar`` when a run starts, so secrets are never read at import time and the UI
shows the variable's name, never its value. Unset variables fall back to the embedded
default: local folders, the shipped sample data and ``local[*]`` Spark.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from resources import (
    FeatureModelResource,
    LakeResource,
    ObjectStoreResource,
    SparkResource,
    UploadEventsResource,
)
from vlm_lake.lake import SAMPLE_IMAGES_URI, SAMPLE_TEXTS_URI

_TRUE = ("1", "true", "yes", "on")

#: Environment variable with the seconds between two ticks of ``new_uploads_sensor``.
UPLOAD_SENSOR_INTERVAL_ENV = "UPLOAD_SENSOR_INTERVAL_SECONDS"
DEFAULT_UPLOAD_SENSOR_INTERVAL_SECONDS = 60


def env_or(name: str, default: Any = None) -> Any:
    """``EnvVar(name)`` if the variable is set (even to a secret), else ``default``."""
    return EnvVar(name) if name in os.environ else default


def build_resources() -> dict[str, Any]:
    """The resources of the code location, configured from the environment.

    Variables: ``RAW_IMAGES_URI``, ``RAW_TEXTS_URI``, ``LAKE_URI``, ``CURATION_POLICY``;
    ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``,
    ``AWS_VIRTUAL_HOSTED_STYLE_REQUEST`` (``true`` for Aliyun OSS); ``SPARK_MASTER`` and
    ``SPARK_REMOTE``; ``RESNET50_WEIGHTS``, ``FEATURES_DEVICE``, ``FEATURES_PRECISION``
    and ``FEATURES_COMPILE``; ``UPLOAD_EVENTS_QUEUE_URL``, ``UPLOAD_EVENTS_ENDPOINT_URL`` and
    ``UPLOAD_SWEEP_INTERVAL_SECONDS``.
    """
    return {
        "lake": LakeResource(
            raw_images_uri=env_or("RAW_IMAGES_URI", SAMPLE_IMAGES_URI),
            raw_texts_uri=env_or("RAW_TEXTS_URI", SAMPLE_TEXTS_URI),
            lake_uri=env_or("LAKE_URI", "lake"),
            curation_policy=env_or("CURATION_POLICY"),
        ),
        "object_store": ObjectStoreResource(
            endpoint_url=env_or("AWS_ENDPOINT_URL"),
            region_name=env_or("AWS_REGION", env_or("AWS_DEFAULT_REGION")),
            aws_access_key_id=env_or("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env_or("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env_or("AWS_SESSION_TOKEN"),
            virtual_hosted_style=os.environ.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower()
            in _TRUE,
        ),
        "spark": SparkResource(
            master=env_or("SPARK_MASTER", "local[*]"),
            remote=env_or("SPARK_REMOTE"),
        ),
        "feature_model": FeatureModelResource(
            weights_uri=env_or("RESNET50_WEIGHTS"),
            device=env_or("FEATURES_DEVICE", "auto"),
            precision=env_or("FEATURES_PRECISION", "auto"),
            compile=env_or("FEATURES_COMPILE", "auto"),
        ),
        "upload_events": UploadEventsResource(
            queue_url=env_or("UPLOAD_EVENTS_QUEUE_URL"),
            endpoint_url=env_or("UPLOAD_EVENTS_ENDPOINT_URL"),
            sweep_interval_seconds=EnvVar.int("UPLOAD_SWEEP_INTERVAL_SECONDS")
            if "UPLOAD_SWEEP_INTERVAL_SECONDS" in os.environ
            else 600,
        ),
    }


def upload_sensor_interval_seconds() -> int:
    """Seconds between two ticks of ``new_uploads_sensor`` (``UPLOAD_SENSOR_INTERVAL_SECONDS``).

    Unlike the resources' variables this one is read when definitions load: the interval is
    part of the sensor's definition. Unset or empty means 60.

    Returns:
        A positive number of seconds.

    Raises:
        ValueError: If the variable is set to anything but a whole number >= 1.
    """
    raw = os.environ.get(UPLOAD_SENSOR_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_UPLOAD_SENSOR_INTERVAL_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(
            f"{UPLOAD_SENSOR_INTERVAL_ENV}={raw!r} is not allowed; expected a whole number of "
            f"seconds >= 1 (default {DEFAULT_UPLOAD_SENSOR_INTERVAL_SECONDS})"
        )
    return seconds
