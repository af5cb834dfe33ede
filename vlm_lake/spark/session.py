"""Start (or connect to) the one Spark session a process uses, bound to loopback locally."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from vlm_lake.store import redact

log = logging.getLogger(__name__)

#: Spark Connect URL parameters whose values are credentials (``;token=...``).
_SECRET_PARAM_WORDS = ("token", "secret", "password")

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


def session_settings(
    master: str, conf: dict[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Spark settings :func:`build_spark_session` applies for ``master``.

    * ``local*`` masters get :data:`LOCAL_DEFAULTS`: everything on 127.0.0.1, no UI.
    * Any other master (``spark://``, ``k8s://``, ``yarn``) keeps the cluster's own
      settings. Only the console progress bar is off (runs log their own progress, and the
      bar would fill the Dagster log), and the driver's address follows the environment:
      when it sets ``SPARK_LOCAL_IP`` (Spark's own variable for "the address this machine
      binds to"), that address becomes the default of ``spark.driver.host`` and
      ``spark.driver.bindAddress``, so the driver's RPC and block-manager ports listen
      there and the executors call back to it. The driver UI stays on (a cluster's master
      links to it), and Spark binds it to ``SPARK_LOCAL_IP`` as well, so a cluster on
      127.0.0.1 (``tests/cluster``) opens no port elsewhere. Real clusters leave
      ``SPARK_LOCAL_IP`` unset (or set it to the machine's routable address), so nothing
      changes for them.

    ``conf`` is applied last: a user's setting always wins over these defaults.

    Args:
        master: Spark master URL (not a Spark Connect URL: those take no driver settings).
        conf: Extra Spark settings from the user.
        environ: The environment to read ``SPARK_LOCAL_IP`` from; ``os.environ`` if None.

    Returns:
        Setting name -> value.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    if master.startswith("local"):
        settings.update(LOCAL_DEFAULTS)
    else:
        settings["spark.ui.showConsoleProgress"] = "false"
        local_ip = env.get("SPARK_LOCAL_IP", "").strip()
        if local_ip:
            settings["spark.driver.host"] = local_ip
            settings["spark.driver.bindAddress"] = local_ip
    settings.update(conf or {})
    return settings


def redact_remote(url: str) -> str:
    """A Spark Connect URL that is safe to log: its credential parameters masked.

    Parameters follow the host as ``;key=value`` (``sc://host:443/;token=...;
    x-databricks-cluster-id=...``). The values of ``token`` and of any key naming a token,
    secret or password are replaced by ``***`` and registered with :mod:`vlm_lake.store.redact`,
    whose log redaction is then installed: no later log record of this process shows them.

    Args:
        url: A Spark Connect URL.

    Returns:
        The URL with those values masked.
    """
    head, *params = url.split(";")
    safe = [head]
    for param in params:
        key, sep, value = param.partition("=")
        if sep and any(word in key.strip().lower() for word in _SECRET_PARAM_WORDS):
            redact.register_secret(value)
            redact.install_log_redaction()
            param = f"{key}={redact.MASK}"
        safe.append(param)
    return ";".join(safe)


def build_spark_session(
    *,
    master: str | None = None,
    remote: str | None = None,
    app_name: str = "vlm-lake",
    conf: dict[str, str] | None = None,
) -> Any:
    """Return a SparkSession with the ``lance`` data source registered.

    ``getOrCreate`` makes this idempotent inside one process: every asset of a run (and
    every test of a session) gets the same JVM, whatever ``master`` a later call names.

    A ``local*`` master binds everything to 127.0.0.1 (``SPARK_LOCAL_IP`` defaults to it)
    and runs Python workers with this interpreter. Another master takes the driver's
    address from ``SPARK_LOCAL_IP`` when it is set (see :func:`session_settings`); the
    executors' interpreter comes from ``PYSPARK_PYTHON`` or ``spark.pyspark.python``.

    Args:
        master: Spark master URL, e.g. ``local[*]`` or ``spark://host:7077``.
        remote: Spark Connect URL (``sc://host:15002``); takes precedence over ``master``.
            Logged with its credential parameters masked (see :func:`redact_remote`).
        app_name: Application name.
        conf: Extra Spark settings, applied after the defaults. Under Spark Connect they
            go to the server's session: the server's own (static) settings stay its own.

    Returns:
        The session.
    """
    from pyspark.sql import SparkSession

    from vlm_lake.spark.lance_source import register

    builder = SparkSession.builder.appName(app_name)
    if remote:
        builder = builder.remote(remote)
        where = redact_remote(remote)
        settings = dict(conf or {})
    else:
        master = master or "local[*]"
        builder = builder.master(master)
        where = master
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # Local Python workers (including the ones Spark starts to plan Python data
            # sources, which only read the environment) run this interpreter and its packages.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        settings = session_settings(master, conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    log.info("starting Spark session on %s", where)
    with warnings.catch_warnings():
        # Starting a local JVM forks this process (subprocess with preexec_fn), and Lance
        # warns at every fork once it is loaded. The child execs java at once and never
        # touches Lance, so that warning is a false alarm here.
        warnings.filterwarnings("ignore", message="lance is not fork-safe", category=UserWarning)
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
