"""The sensor as deployed: registered in the code location, configured, ticked by the daemon."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DefaultSensorStatus
from helpers import S3_KEY, S3_REGION, S3_SECRET, SEED_TESTDATA, photo_variant, put
from sensor_helpers import IMAGES_PREFIX, TEXTS_KEY, expected_selection

from dagster_project.definitions import defs
from dagster_project.sensors import build_new_uploads_sensor
from dagster_project.settings import upload_sensor_interval_seconds

REPO = Path(__file__).resolve().parents[2]


def test_registered_with_the_configured_interval() -> None:
    sensor = defs.resolve_sensor_def("new_uploads_sensor")
    assert sensor.minimum_interval_seconds == upload_sensor_interval_seconds()
    assert sensor.job_name == "vlm_lake_job"
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    assert sensor.required_resource_keys == {"lake", "object_store", "upload_events"}
    assert "UPLOAD_SENSOR_INTERVAL_SECONDS" in sensor.description


def test_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPLOAD_SENSOR_INTERVAL_SECONDS", raising=False)
    assert build_new_uploads_sensor().minimum_interval_seconds == 60
    monkeypatch.setenv("UPLOAD_SENSOR_INTERVAL_SECONDS", " 15 ")
    assert build_new_uploads_sensor().minimum_interval_seconds == 15
    assert build_new_uploads_sensor(minimum_interval_seconds=5).minimum_interval_seconds == 5


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "soon"])
def test_bad_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UPLOAD_SENSOR_INTERVAL_SECONDS", value)
    with pytest.raises(ValueError, match=rf"UPLOAD_SENSOR_INTERVAL_SECONDS='{value}'.*>= 1"):
        upload_sensor_interval_seconds()
    with pytest.raises(ValueError, match=r"minimum_interval_seconds=0 is not allowed"):
        build_new_uploads_sensor(minimum_interval_seconds=0)


def _set_cursor(instance: DagsterInstance, remote_sensor: Any, cursor: str | None) -> None:
    """What ``dagster sensor cursor --set`` does."""
    from dagster._core.scheduler.instigation import SensorInstigatorData

    state = instance.get_instigator_state(
        remote_sensor.get_remote_origin_id(), remote_sensor.selector_id
    )
    data = state.instigator_data
    instance.update_instigator_state(
        state.with_data(
            SensorInstigatorData(
                last_tick_timestamp=data.last_tick_timestamp,
                last_run_key=data.last_run_key,
                min_interval=remote_sensor.min_interval_seconds,
                cursor=cursor,
                last_tick_start_timestamp=data.last_tick_start_timestamp,
                last_sensor_start_timestamp=data.last_sensor_start_timestamp,
                sensor_type=remote_sensor.sensor_type,
            )
        )
    )


def test_daemon_ticks_persist_the_cursor_and_never_start_a_run_twice(
    s3_endpoint: str, s3_store: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real sensor daemon loop, on an instance whose runs queue (nothing executes).

    Tick 1 queues a run; after a "restart" (a new instance object and a new code location
    load on the same storage) the stored cursor makes tick 2 skip; then the cursor is
    cleared, as if the daemon had died before saving tick 1's, and the replayed tick
    requests the same run key, which Dagster does not start again.
    """
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import (
        InProcessTestWorkspaceLoadTarget,
        create_test_daemon_workspace_context,
        instance_for_test,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.sensor import execute_sensor_iteration

    client = s3_store.client
    for i in range(3):
        put(client, bucket, f"{IMAGES_PREFIX}image{i}.jpg", photo_variant(i))
    put(client, bucket, TEXTS_KEY, SEED_TESTDATA.read_bytes())
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": S3_REGION,
        "RAW_IMAGES_URI": f"s3://{bucket}/{IMAGES_PREFIX}",
        "RAW_TEXTS_URI": f"s3://{bucket}/{TEXTS_KEY}",
        "LAKE_URI": f"s3://{bucket}/lake",
        "UPLOAD_SENSOR_INTERVAL_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            python_file=str(Path(__file__).with_name("daemon_location.py")),
            attribute="defs",
            working_directory=str(REPO),
        ),
        location_name="vlm_lake_daemon_test",
    )
    log = logging.getLogger("sensor_daemon_test")
    queued = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
    }

    def daemon_tick(instance: DagsterInstance, start: bool = False) -> tuple[Any, Any]:
        """Load the code location afresh and run one iteration of the sensor daemon."""
        target = InProcessTestWorkspaceLoadTarget(origin)
        with create_test_daemon_workspace_context(target, instance) as workspace:
            location = workspace.create_request_context().get_code_location(origin.location_name)
            repository = next(iter(location.get_repositories().values()))
            remote_sensor = repository.get_sensor("new_uploads_sensor")
            if start:
                instance.start_sensor(remote_sensor)
            time.sleep(1.05)  # the interval is 1 s
            list(execute_sensor_iteration(workspace, log, None, None))
        ticks = instance.get_ticks(remote_sensor.get_remote_origin_id(), remote_sensor.selector_id)
        return remote_sensor, ticks[0]

    with instance_for_test(overrides=queued) as instance:
        remote_sensor, tick1 = daemon_tick(instance, start=True)
        assert remote_sensor.min_interval_seconds == 1  # UPLOAD_SENSOR_INTERVAL_SECONDS
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status.value == "QUEUED"
        run_key = runs[0].tags["dagster/run_key"]
        assert tick1.run_keys == [run_key] and run_key.startswith("uploads-1-")
        graph = defs.resolve_asset_graph()
        assert {k.to_user_string() for k in runs[0].asset_selection} == expected_selection(
            graph, ["image_lance", "rejected_images", "text_lance", "rejected_documents"]
        )
        assert runs[0].job_name == "vlm_lake_job"
        assert runs[0].tags["vlm_lake/images_objects"] == "3"

        # restart: a new instance object on the same storage, a fresh code location load
        with DagsterInstance.from_ref(instance.get_ref()) as restarted:
            _, tick2 = daemon_tick(restarted)
            assert tick2.status.value == "SKIPPED"
            assert "no new, changed or deleted objects" in tick2.skip_reason
            assert restarted.get_runs_count() == 1

            # the daemon died after queueing run 1 but before saving its cursor: the first
            # tick is evaluated again and requests the same run key, which Dagster skips
            _set_cursor(restarted, remote_sensor, None)
            _, replay = daemon_tick(restarted)
            assert replay.run_keys == [run_key] and replay.tick_data.run_ids == []
            assert replay.status.value == "SKIPPED"
            assert restarted.get_runs_count() == 1  # no duplicate run
