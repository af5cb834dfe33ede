"""The Spark resource: dagster-pyspark's lazy session, started once per process."""

from __future__ import annotations

from typing import Any

from dagster_pyspark import LazyPySparkResource
from dagster_spark.utils import flatten_dict
from pydantic import Field

from vlm_lake.spark.session import build_spark_session


class SparkResource(LazyPySparkResource):
    """A SparkSession for ``local[*]``, a standalone/K8s master, or Spark Connect.

    The session is created on first use (assets that do not need Spark never start it) and
    reused for the rest of the process through ``getOrCreate``: with the in-process executor
    a whole run starts one JVM. The ``lance`` data source is registered on it.
    """

    spark_config: dict[str, Any] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.executor.memory."
    )
    master: str = Field(default="local[*]", description="Spark master URL (SPARK_MASTER).")
    remote: str | None = Field(
        default=None, description="Spark Connect URL, e.g. sc://host:15002 (SPARK_REMOTE)."
    )
    app_name: str = Field(default="vlm-lake", description="Spark application name.")

    def _init_session(self) -> None:
        if self._spark_session is None:
            conf = {str(k): str(v) for k, v in flatten_dict(self.spark_config)}
            self._spark_session = build_spark_session(
                master=self.master or None,
                remote=self.remote or None,
                app_name=self.app_name,
                conf=conf,
            )
