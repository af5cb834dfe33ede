"""boto3 path: list, read and atomic writes retry throttling, 5xx, timeouts and drops."""

from __future__ import annotations

import re

import pytest
from fault_helpers import DELAY_S, MAX_ATTEMPTS
from helpers import S3_KEY, S3_SECRET, photo_variant, put
from s3_faults import FaultProxy, RequestRecord

from vlm_lake.store.multipart import PART_SIZE
from vlm_lake.store.object_store import ObjectNotFoundError, ObjectStore, ObjectStoreError


def _to(records: list[RequestRecord], method: str, path: str) -> list[RequestRecord]:
    return [r for r in records if r.method == method and r.path == path]


@pytest.mark.parametrize("kind", ["slowdown", "internal", "delay", "drop", "truncate"])
def test_read_bytes_retries_until_the_object_comes_back(
    kind: str, faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    data = photo_variant(1)
    put(s3_store.client, bucket, "img/a.jpg", data)
    times = 1 if kind == "delay" else MAX_ATTEMPTS - 1  # each delay costs a read timeout
    rule = faulty_s3.add_fault(
        kind, method="GET", path=rf"^/{bucket}/img/a\.jpg$", times=times, delay_s=DELAY_S
    )

    assert proxy_store.read_bytes(f"s3://{bucket}/img/a.jpg") == data

    assert rule.hits == times
    gets = _to(faulty_s3.requests, "GET", f"/{bucket}/img/a.jpg")
    assert [r.fault for r in gets[:times]] == [kind] * times, faulty_s3.lines()
    assert (gets[-1].fault, gets[-1].status) == (None, 200), faulty_s3.lines()


def test_list_retries_5xx_throttling_and_drops(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    keys = [f"many/k{i:02d}.jpg" for i in range(7)]
    for key in keys:
        put(s3_store.client, bucket, key, key.encode())
    for kind in ("slowdown", "drop"):  # MAX_ATTEMPTS - 1 faults on the same request
        faulty_s3.add_fault(kind, method="GET", query="list-type=2", times=1)
    faulty_s3.add_fault("internal", method="HEAD", path=rf"^/{bucket}/many$", times=1)

    found = list(proxy_store.list(f"s3://{bucket}/many"))

    assert [i.key for i in found] == keys
    assert [i.size for i in found] == [len(k) for k in keys]
    listings = [r for r in faulty_s3.requests if "list-type=2" in r.query]
    assert [r.fault for r in listings] == ["slowdown", "drop", None]
    assert listings[-1].status == 200
    heads = _to(faulty_s3.requests, "HEAD", f"/{bucket}/many")
    assert [(r.fault, r.status) for r in heads] == [("internal", 500), (None, 404)]


def test_atomic_writer_retries_every_multipart_step(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    uri = f"s3://{bucket}/out/big.bin"
    chunk = photo_variant(2)
    data = (chunk * (PART_SIZE // len(chunk) + 2))[: PART_SIZE + 4096]  # two parts
    path = rf"^/{bucket}/out/big\.bin$"
    rules = [
        faulty_s3.add_fault("slowdown", method="POST", path=path, query="uploads", times=1),
        faulty_s3.add_fault("internal", method="PUT", path=path, query="partNumber=1", times=1),
        faulty_s3.add_fault(
            "delay", method="PUT", path=path, query="partNumber=2", times=1, delay_s=DELAY_S
        ),
        faulty_s3.add_fault("drop", method="POST", path=path, query="uploadId=", times=1),
    ]

    with proxy_store.open_atomic_writer(uri) as out:
        out.write(data[:1000])
        out.write(data[1000:])

    assert [r.hits for r in rules] == [1, 1, 1, 1]
    assert s3_store.read_bytes(uri) == data
    assert s3_store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    def step(r: RequestRecord) -> str:
        if r.method == "PUT":
            return "part " + re.sub(r".*partNumber=(\d+).*", r"\1", r.query)
        return "create" if r.query.startswith("uploads") else "complete"

    assert [(step(r), r.status) for r in faulty_s3.requests] == [
        ("create", 503),
        ("create", 200),
        ("part 1", 500),
        ("part 1", 200),
        ("part 2", None),  # timed out
        ("part 2", 200),
        ("complete", None),  # connection dropped
        ("complete", 200),
    ], faulty_s3.lines()


def test_single_put_retries(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    uri = f"s3://{bucket}/out/small.json"
    faulty_s3.add_fault("slowdown", method="PUT", path=r"/small\.json$", times=1)
    faulty_s3.add_fault("internal", method="PUT", path=r"/small\.json$", times=1)
    proxy_store.write_bytes(uri, b'{"ok": true}')
    assert s3_store.read_bytes(uri) == b'{"ok": true}'
    puts = _to(faulty_s3.requests, "PUT", f"/{bucket}/out/small.json")
    assert [r.status for r in puts] == [503, 500, 200]


@pytest.mark.parametrize(
    ("kind", "code"),
    [("slowdown", "SlowDown"), ("internal", "InternalError"), ("drop", "ConnectionClosedError")],
)
def test_read_gives_up_after_max_attempts_with_an_error_naming_the_uri(
    kind: str,
    code: str,
    faulty_s3: FaultProxy,
    proxy_store: ObjectStore,
    s3_store: ObjectStore,
    bucket: str,
) -> None:
    uri = f"s3://{bucket}/img/never.jpg"
    put(s3_store.client, bucket, "img/never.jpg", photo_variant(3))
    rule = faulty_s3.add_fault(kind, method="GET", path=r"/never\.jpg$", times=100)

    with pytest.raises(ObjectStoreError) as err:
        proxy_store.read_bytes(uri)

    assert rule.hits == MAX_ATTEMPTS  # the first attempt and every retry, then it gave up
    assert (err.value.uri, err.value.operation, err.value.code) == (uri, "GetObject", code)
    message = str(err.value)
    assert message.startswith(f"GetObject failed for uri={uri!r} ({code}): ")
    assert S3_SECRET not in message
    assert S3_KEY not in message
    assert isinstance(err.value, OSError)


def test_list_exists_and_write_give_up_with_errors_naming_the_uri(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    prefix = f"s3://{bucket}/raw"
    faulty_s3.add_fault("slowdown", method="GET", query="list-type=2", times=100)
    with pytest.raises(ObjectStoreError, match=re.escape(f"uri={prefix!r} (SlowDown)")):
        list(proxy_store.list(prefix + "/"))

    uri = f"s3://{bucket}/out/training.json"
    s3_store.write_bytes(uri, b"previous version")
    faulty_s3.add_fault("internal", method="HEAD", path=r"/training\.json$", times=100)
    with pytest.raises(ObjectStoreError, match=re.escape(f"HeadObject failed for uri={uri!r}")):
        proxy_store.exists(uri)

    put_rule = faulty_s3.add_fault("internal", method="PUT", path=r"/training\.json$", times=100)
    with pytest.raises(ObjectStoreError) as err:
        proxy_store.write_bytes(uri, b"new version")
    assert str(err.value).startswith(f"PutObject failed for uri={uri!r} (InternalError): ")
    assert put_rule.hits == MAX_ATTEMPTS
    assert s3_store.read_bytes(uri) == b"previous version"  # the failed write changed nothing


def test_missing_objects_and_buckets_are_clear_errors(
    proxy_store: ObjectStore, bucket: str
) -> None:
    missing = f"s3://{bucket}/nope/missing.jpg"
    with pytest.raises(ObjectNotFoundError, match=re.escape(f"uri={missing!r} (NoSuchKey)")):
        proxy_store.read_bytes(missing)
    with pytest.raises(FileNotFoundError):  # like a missing local file
        proxy_store.read_bytes(missing)
    assert not proxy_store.exists(missing)
    no_bucket = "s3://no-such-bucket-faults/raw"
    with pytest.raises(ObjectStoreError, match=re.escape(f"uri={no_bucket!r} (NoSuchBucket)")):
        list(proxy_store.list(no_bucket + "/"))
