"""The whole pipeline through a Spark Connect server on 127.0.0.1 (``SPARK_REMOTE=sc://…``).

The run is started as a user starts it (the Dagster CLI); the client process starts no JVM
of its own, and the server's log shows the jobs it ran for it.
"""

from __future__ import annotations

import logging
import re

from cluster_helpers import (
    assert_features_match_reference,
    assert_lake_outputs,
    assert_loopback_only,
    materialize_all,
    pipeline_env,
    task_threads,
)

log = logging.getLogger(__name__)

_FINISHED_TASK = re.compile(r"Executor: Finished task")


def test_pipeline_through_spark_connect(connect_server, dagster_home, tmp_path):
    lake = tmp_path / "lake"
    tasks_before = len(_FINISHED_TASK.findall(connect_server.log.read_text(errors="replace")))
    env = pipeline_env(dagster_home, lake, SPARK_REMOTE=connect_server.remote)
    run = materialize_all(env, tmp_path, watch=[connect_server.pid])
    log.info("pipeline through Spark Connect took %.1f s", run.seconds)

    assert f"starting Spark session on {connect_server.remote}" in run.output
    assert "Spark Connect has no broadcast: workers load the weights themselves" in run.output
    assert "training_json - wrote 4 records with 8 images" in run.output
    assert_lake_outputs(lake)
    assert_loopback_only(run.listening)  # the client, the server and its Python workers

    # The work went through the server: the client started no JVM, the server ran the tasks.
    assert "java" not in run.children, run.children
    server_log = connect_server.log.read_text(errors="replace")
    tasks = len(_FINISHED_TASK.findall(server_log)) - tasks_before
    log.info("the Connect server ran %d tasks for the run", tasks)
    assert tasks > 0, server_log[-4000:]

    # Workers rebuilt the seed-0 weights themselves; the features are still bit-identical.
    assert_features_match_reference(lake, task_threads(run.output))
