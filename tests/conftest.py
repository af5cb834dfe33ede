"""Shared fixtures: one local Spark session, one S3 server (moto, HTTP on 127.0.0.1)."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request

from helpers import S3_KEY, S3_REGION, S3_SECRET, free_port  # noqa: E402

from vlm_lake.store.object_store import ObjectStore, StoreSettings  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An isolated DAGSTER_HOME with telemetry off, for every test and CLI subprocess."""
    from dagster_project.instance import ensure_dagster_home

    return ensure_dagster_home(tmp_path_factory.mktemp("dagster_home"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API served over HTTP on 127.0.0.1 by moto's server mode."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_settings(s3_endpoint: str) -> StoreSettings:
    return StoreSettings(
        endpoint_url=s3_endpoint,
        region=S3_REGION,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        max_attempts=2,
    )


@pytest.fixture()
def object_store_resource(s3_endpoint: str) -> Any:
    """The project's ``ObjectStoreResource`` pointed at the S3 test server."""
    from resources import ObjectStoreResource

    return ObjectStoreResource(
        endpoint_url=s3_endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        max_attempts=2,
    )


@pytest.fixture()
def s3_store(s3_settings: StoreSettings) -> ObjectStore:
    return ObjectStore(s3_settings)


@pytest.fixture()
def bucket(s3_store: ObjectStore) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_store.client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def spark() -> Any:
    """The one Spark session all tests share (local, 2 cores, loopback only)."""
    from vlm_lake.spark.session import build_spark_session

    session = build_spark_session(
        master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}, app_name="vlm-lake-tests"
    )
    yield session
    session.stop()


@pytest.fixture()
def local_store() -> ObjectStore:
    return ObjectStore()


@pytest.fixture()
def faulty_s3(s3_endpoint: str) -> Iterator[Any]:
    """A fault-injecting HTTP proxy in front of the S3 test server, on 127.0.0.1.

    Point a client at ``.endpoint`` instead of ``s3_endpoint``; ``.add_fault(kind, ...)``
    makes the first N matching requests fail (503 SlowDown, 500, timeout, dropped or cut
    short), ``.requests`` records every request. See ``tests/s3_faults.py``.
    """
    from s3_faults import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        yield proxy
