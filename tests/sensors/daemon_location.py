"""The project's code location, with resources and the sensor built from the environment now.

``dagster_project.definitions`` reads the environment once, when first imported; the daemon
test sets ``RAW_*``, ``AWS_*`` and ``UPLOAD_SENSOR_INTERVAL_SECONDS`` first and loads this file
as its code location, so the sensor runs exactly as deployed, against the test bucket.
"""

from __future__ import annotations

from dagster_shared.record import replace

from dagster_project.definitions import defs as project_defs
from dagster_project.sensors import build_new_uploads_sensor
from dagster_project.settings import build_resources

defs = replace(project_defs, resources=build_resources(), sensors=[build_new_uploads_sensor()])
