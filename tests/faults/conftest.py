"""Fault-tier fixtures: an object store that talks to S3 through the fault-injecting proxy."""

from __future__ import annotations

import pytest
from fault_helpers import MAX_ATTEMPTS, READ_TIMEOUT_S
from helpers import S3_KEY, S3_REGION, S3_SECRET
from s3_faults import FaultProxy

from vlm_lake.store.object_store import ObjectStore, StoreSettings


@pytest.fixture()
def proxy_settings(faulty_s3: FaultProxy) -> StoreSettings:
    """Settings whose endpoint is the fault proxy (same credentials as the S3 server's)."""
    return StoreSettings(
        endpoint_url=faulty_s3.endpoint,
        region=S3_REGION,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        max_attempts=MAX_ATTEMPTS,
        connect_timeout=READ_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )


@pytest.fixture()
def proxy_store(proxy_settings: StoreSettings) -> ObjectStore:
    """An object store whose every S3 request (boto3 and Lance) goes through the proxy."""
    return ObjectStore(proxy_settings)
