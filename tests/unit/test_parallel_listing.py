"""Parallel listing of a large prefix: one stream per sub-prefix, the same objects."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import put, recorded_s3_requests, seed_objects

from vlm_lake.store.object_store import ObjectStore, ObjectStoreError
from vlm_lake.store.parallel_listing import list_parallel


def test_every_object_once_with_one_stream_per_sub_prefix(
    s3_store: ObjectStore, bucket: str
) -> None:
    seed_objects(
        bucket,
        [
            (f"raw/{folder}/img_{i:04d}.jpg", b"x" * (i % 5 + 1))
            for folder in "abcde"
            for i in range(1500)
        ],
    )
    put(s3_store.client, bucket, "raw/top.jpg", b"top")
    put(s3_store.client, bucket, "other/outside.jpg", b"no")
    uri = f"s3://{bucket}/raw/"
    with recorded_s3_requests() as requests:
        parallel = list(list_parallel(s3_store, uri, workers=3))
    sequential = list(s3_store.list(uri))
    assert len(parallel) == 7501
    assert sorted(parallel, key=lambda i: i.key) == sequential
    lists = [r for r in requests if r.method == "GET" and "list-type" in r.query]
    assert [r for r in lists if r.query.get("delimiter") == ["/"]]  # the split
    streamed = {r.query["prefix"][0] for r in lists if "delimiter" not in r.query}
    assert streamed == {f"raw/{f}/" for f in "abcde"}
    assert len(lists) == 1 + 5 * 2  # the split, then 2 pages of 1,000 per sub-prefix


def test_local_folders_and_single_objects_are_listed_as_usual(
    tmp_path: Any, local_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "y.jpg").write_bytes(b"2")
    assert list(list_parallel(local_store, str(tmp_path))) == list(local_store.list(str(tmp_path)))
    put(s3_store.client, bucket, "one.json", b"[]")
    (only,) = list_parallel(s3_store, f"s3://{bucket}/one.json")
    assert only.key == "one.json"


def test_a_missing_bucket_names_the_prefix(s3_store: ObjectStore) -> None:
    with pytest.raises(ObjectStoreError, match="no-such-bucket-vlm"):
        list(list_parallel(s3_store, "s3://no-such-bucket-vlm/raw/"))
    with pytest.raises(ValueError, match="workers=0 must be at least 1"):
        list(list_parallel(s3_store, "s3://x/raw/", workers=0))
