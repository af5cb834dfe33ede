"""Lance path: writes and reads on S3 retry throttling, 5xx, timeouts and drops."""

from __future__ import annotations

import lance
import pyarrow as pa
import pytest
from fault_helpers import DELAY_S, MAX_ATTEMPTS
from helpers import S3_KEY, S3_SECRET, photo_variant
from s3_faults import FaultProxy, FaultRule

from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io


def _table(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "image": pa.array([photo_variant(i) for i in ids], pa.binary()),
        }
    )


def _all_hit(rules: list[FaultRule], proxy: FaultProxy) -> None:
    for rule in rules:
        assert rule.hits == rule.times, (rule, proxy.lines())


def _retried_ok(proxy: FaultProxy) -> None:
    """Every request that got a fault was later sent again and answered 2xx."""
    records = proxy.requests
    for i, failed in enumerate(records):
        if failed.fault is None:
            continue
        later = [
            r
            for r in records[i + 1 :]
            if (r.method, r.path, r.query) == (failed.method, failed.path, failed.query)
        ]
        ok = [r for r in later if r.fault is None and r.status is not None and r.status < 300]
        assert ok, f"{failed.line} was never retried successfully:\n" + "\n".join(proxy.lines())


def test_lance_write_and_read_back_through_faults(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, bucket: str
) -> None:
    uri = f"s3://{bucket}/lake/t.lance"
    base = f"^/{bucket}/lake/t\\.lance"
    opts = proxy_store.storage_options(uri)
    expected = _table(0, 12)
    write_rules = [
        faulty_s3.add_fault("slowdown", method="PUT", path=f"{base}/data/", times=1),
        faulty_s3.add_fault("internal", method="PUT", path=f"{base}/data/", times=1),
        faulty_s3.add_fault("drop", method="PUT", path=f"{base}/_transactions/", times=1),
        faulty_s3.add_fault("internal", method="PUT", path=f"{base}/_versions/", times=1),
        faulty_s3.add_fault("slowdown", method="GET", query="list-type=2", times=1),
    ]

    lance.write_dataset(expected, uri, mode="create", max_rows_per_file=4, storage_options=opts)

    _all_hit(write_rules, faulty_s3)
    _retried_ok(faulty_s3)

    faulty_s3.clear_faults()
    start = len(faulty_s3.requests)
    read_rules = [
        faulty_s3.add_fault("slowdown", method="GET", path=f"{base}/data/", times=1),
        faulty_s3.add_fault("internal", method="GET", path=f"{base}/data/", times=1),
        faulty_s3.add_fault("delay", method="GET", path=f"{base}/data/", times=1, delay_s=DELAY_S),
        faulty_s3.add_fault("drop", method="GET", path=f"{base}/data/", times=1),
        faulty_s3.add_fault("internal", method="GET", path=f"{base}/_versions/", times=1),
    ]

    ds = lance_io.open_dataset(uri, opts)
    assert ds.version == 1
    assert len(ds.get_fragments()) == 3
    assert ds.to_table().equals(expected)
    assert ds.take([0, 5, 11]).to_pylist() == expected.take([0, 5, 11]).to_pylist()

    _all_hit(read_rules, faulty_s3)
    assert all(r.host == faulty_s3.endpoint.split("//")[1] for r in faulty_s3.requests[start:])
    _retried_ok(faulty_s3)


def test_lance_write_gives_up_after_retries_and_keeps_the_previous_version(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    uri = f"s3://{bucket}/lake/keep.lance"
    first = _table(0, 4)
    lance.write_dataset(first, uri, storage_options=proxy_store.storage_options(uri))
    rule = faulty_s3.add_fault(
        "slowdown", method="PUT", path=f"^/{bucket}/lake/keep\\.lance/data/", times=1000
    )

    with pytest.raises(OSError) as err:
        lance.write_dataset(
            _table(4, 4), uri, mode="append", storage_options=proxy_store.storage_options(uri)
        )

    # object_store's own attempts, each round repeated by Lance's throttle (AIMD) layer
    assert rule.hits >= MAX_ATTEMPTS
    assert rule.hits % MAX_ATTEMPTS == 0
    message = str(err.value)
    assert "keep.lance/data/" in message
    assert "503" in message
    assert f"max_retries: {MAX_ATTEMPTS - 1}," in message  # our client_max_retries, honoured
    assert S3_SECRET not in message
    assert S3_KEY not in message
    ds = lance_io.open_dataset(uri, s3_store.storage_options(uri))  # straight to the server
    assert ds.version == 1
    assert ds.to_table().equals(first)
