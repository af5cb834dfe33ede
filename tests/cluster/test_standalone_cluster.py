"""The whole pipeline against a Spark standalone cluster: a master and two workers on 127.0.0.1.

The run is started as a user starts it (the Dagster CLI with ``SPARK_MASTER=spark://…``);
the test then checks what it wrote, that the Spark work ran in the workers' executors, and
that every process involved listened on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import re
import time

from cluster_helpers import (
    assert_features_match_reference,
    assert_lake_outputs,
    assert_loopback_only,
    materialize_all,
    pipeline_env,
    task_threads,
)

log = logging.getLogger(__name__)


def _completed_app(cluster, name: str, timeout_s: float = 60.0) -> dict:
    """The master's record of the finished application ``name`` (it lands a moment after
    the driver exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = cluster.state()
        apps = [a for a in state["completedapps"] if a["name"] == name]
        if apps or time.monotonic() > deadline:
            assert len(apps) == 1, (state["activeapps"], state["completedapps"])
            return apps[0]
        time.sleep(0.5)


def test_pipeline_on_standalone_cluster(standalone_cluster, dagster_home, tmp_path):
    lake = tmp_path / "lake"
    env = pipeline_env(dagster_home, lake, SPARK_MASTER=standalone_cluster.master_url)
    # The image and text ingest and the training export on Spark (engine=spark): the
    # downloads, the scans, the fragment writes and the shard writes and checks are tasks.
    spark_ingest = {
        "ops": {
            "ingest_images": {"config": {"engine": "spark"}},
            "ingest_texts": {"config": {"engine": "spark"}},
            "training_json": {"config": {"engine": "spark"}},
        }
    }
    run = materialize_all(
        env, tmp_path, watch=[p.pid for p in standalone_cluster.processes], config=spark_ingest
    )
    log.info("pipeline on the standalone cluster took %.1f s", run.seconds)

    assert f"starting Spark session on {standalone_cluster.master_url}" in run.output
    assert re.search(r"broadcasting [\d.]+ MB of ResNet-50 weights", run.output)  # classic mode
    assert "training_json - wrote 4 records with 8 images" in run.output
    assert re.search(r"\d+ shards written \(spark\), 0 reused", run.output)
    assert re.search(r"texts: \d+ file\(s\) in \d+ Spark scan tasks", run.output)
    assert "images: 4 objects to download in 1 Spark tasks" in run.output
    assert re.search(
        r"image_lance: 4 downloaded \([\d.]+ MB\) in [\d.]+s by 1 Spark tasks", run.output
    )
    assert_lake_outputs(lake)
    # The driver, the master, the workers, the executors and all their Python workers.
    assert_loopback_only(run.listening)
    log.info("listening sockets seen during the run: %s", sorted(run.listening))
    assert "java" in run.children, run.children  # the driver JVM is the CLI's child

    # The master recorded the run as a finished application that had executors.
    app = _completed_app(standalone_cluster, "vlm-lake")
    assert app["state"] == "FINISHED", app
    log.info("the master's record of the run: %s", app)

    # Each worker ran an executor of that application, and the executors ran the tasks:
    # the image ingest's downloads, the Spark join (Lance data source reads) and the feature
    # extraction (the driver of a standalone cluster runs no task itself).
    finished = {}
    for work_dir in standalone_cluster.work_dirs:
        executors = list((work_dir / app["id"]).iterdir())
        assert executors, f"no executor of {app['id']} in {work_dir}"
        for executor in executors:
            stderr = (executor / "stderr").read_text(errors="replace")
            assert "Successfully registered with driver" in stderr, stderr[-3000:]
            finished[f"{work_dir.name}/{executor.name}"] = stderr.count("Finished task")
    log.info("tasks finished per executor: %s", finished)
    assert len(finished) == 2 and sum(finished.values()) > 0, finished

    # Features computed by the executors equal, bit for bit, the ones computed here.
    assert_features_match_reference(lake, task_threads(run.output))
