"""The Dagster code location: wiring only.

The executor is in-process: every step of a run shares one process, so the Spark session
(a JVM that takes seconds to start) is created once per run rather than once per step, and
no Lance handle ever crosses a fork. Parallelism comes from Spark and the download pool,
not from running steps side by side.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from assets import ALL_ASSETS
from dagster_project.sensors import new_uploads_sensor
from dagster_project.settings import build_resources

vlm_lake_job = define_asset_job(
    "vlm_lake_job",
    selection=AssetSelection.all(),
    description="Raw uploads -> images/texts Lance -> multimodal Lance (Spark) -> training JSON "
    "and the LLaMA-Factory folder, and images -> ResNet-50 features (Spark).",
)

#: Evaluates the downstream assets' automation conditions (``assets/automation.py``): an
#: ingest materialized by hand propagates downstream. Stopped by default, like
#: ``new_uploads_sensor``; turn both on in the UI (Automation) or with ``dagster sensor start``.
follow_upstream_sensor = AutomationConditionSensorDefinition(
    "follow_upstream_sensor",
    target=AssetSelection.all(),
    minimum_interval_seconds=30,
    description="Materializes multimodal_lance, training_json, training_llamafactory and "
    "image_features after their inputs updated and passed their blocking checks.",
)

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[vlm_lake_job],
    sensors=[new_uploads_sensor, follow_upstream_sensor],
    resources=build_resources(),
    executor=in_process_executor,
)
