"""Start (or connect to) the one Spark session a process uses, bound to loopback locally."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

#: Settings for a local session: loopback only, no UI port, Arrow on, workers reused.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
}


def build_spark_session(
    *,
    master: str | None = None,
    remote: str | None = None,
    app_name: str = "vlm-lake",
    conf: dict[str, str] | None = None,
) -> Any:
    """Return a SparkSession with the ``lance`` data source registered.

    ``getOrCreate`` makes this idempotent inside one process: every asset of a run (and
    every test of a session) gets the same JVM.

    Args:
        master: Spark master URL, e.g. ``local[*]`` or ``spark://host:7077``.
        remote: Spark Connect URL (``sc://host:15002``); takes precedence over ``master``.
        app_name: Application name.
        conf: Extra Spark settings, applied after the defaults.

    Returns:
        The session.
    """
    from pyspark.sql import SparkSession

    from vlm_lake.spark_lance import register

    builder = SparkSession.builder.appName(app_name)
    settings: dict[str, str] = {}
    if remote:
        builder = builder.remote(remote)
        where = remote
    else:
        master = master or "local[*]"
        builder = builder.master(master)
        where = master
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            settings.update(LOCAL_DEFAULTS)
        if master.startswith("local"):
            # Local Python workers (including the ones Spark starts to plan Python data
            # sources, which only read the environment) run this interpreter and its packages.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    log.info("starting Spark session on %s", where)
    spark = builder.getOrCreate()
    register(spark)
    return spark


def spark_context(spark: Any) -> Any | None:
    """The session's SparkContext, or None under Spark Connect.

    A Connect client has no SparkContext (no broadcast, no status tracker); asking for one
    raises ``PySparkAttributeError``, an ``AttributeError``.
    """
    try:
        return spark.sparkContext
    except AttributeError:
        return None
