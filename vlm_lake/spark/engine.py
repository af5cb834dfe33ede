"""Where a step runs: ``local`` (this process), ``spark`` (Spark tasks) or ``auto``."""

from __future__ import annotations

from typing import Any

ENGINES = ("auto", "local", "spark")


def check_engine(engine: str) -> None:
    """Refuse an engine name that is not one of :data:`ENGINES`.

    Raises:
        ValueError: Names the engine and what is allowed.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not allowed; expected one of {ENGINES}")


def use_spark(engine: str, spark: Any, amount: int, spark_from: int) -> bool:
    """Whether a step runs on Spark.

    Args:
        engine: ``local``, ``spark``, or ``auto`` (Spark when a session is given and the
            work ``amount`` reaches ``spark_from``: below, starting Spark costs more than it
            saves).
        spark: A SparkSession, a function returning one, or None.
        amount: The size of the work (objects, bytes, shards: the caller's unit).
        spark_from: The ``amount`` from which ``auto`` uses Spark.

    Raises:
        ValueError: An unknown engine, or ``spark`` without a session.
    """
    check_engine(engine)
    if engine == "spark" and spark is None:
        raise ValueError("engine='spark' needs a Spark session (spark=...); got None")
    if engine == "auto":
        return spark is not None and amount >= spark_from
    return engine == "spark"
