"""A run killed in the middle of a write leaves the previous version intact and readable.

The ingest runs in a subprocess against S3 through the fault proxy. The proxy holds the
request that commits the new version (the PUT of its ``_versions/*.manifest``) until the
test has SIGKILLed the process, so the kill lands after every data file of the new version
has been uploaded and before the commit: the worst moment, made deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from helpers import S3_KEY, S3_REGION, S3_SECRET, photo_variant, put
from s3_faults import FaultProxy, RequestRecord

from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io

CHILD = Path(__file__).with_name("ingest_child.py")


def _snapshot(uri: str, store: ObjectStore) -> tuple[int, pa.Table]:
    ds = lance_io.open_dataset(uri, store.storage_options(uri))
    table = ds.to_table(columns=["image_id", "image_data", "sha256"]).sort_by("image_id")
    return ds.version, table


def _data_keys(store: ObjectStore, bucket: str) -> set[str]:
    return {i.key for i in store.list(f"s3://{bucket}/lake/images.lance/data")}


def test_sigkill_during_the_commit_keeps_the_previous_version(
    faulty_s3: FaultProxy, s3_store: ObjectStore, bucket: str
) -> None:
    images_uri = f"s3://{bucket}/raw/"
    dataset_uri = f"s3://{bucket}/lake/images.lance"
    for i in range(4):
        put(s3_store.client, bucket, f"raw/a{i}.jpg", photo_variant(60 + i))
    ingest_images(s3_store, images_uri, dataset_uri, ImageIngestOptions(workers=2))
    before_version, before = _snapshot(dataset_uri, s3_store)
    before_files = _data_keys(s3_store, bucket)
    assert before.num_rows == 4

    # New and changed uploads, so the second ingest has data to write.
    for i in range(4, 8):
        put(s3_store.client, bucket, f"raw/a{i}.jpg", photo_variant(60 + i))
    put(s3_store.client, bucket, "raw/a0.jpg", photo_variant(99))
    commit = faulty_s3.add_fault(
        "delay",
        method="PUT",
        path=rf"^/{bucket}/lake/images\.lance/_versions/.*\.manifest$",
        times=1,
        delay_s=120,
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    env["AWS_REGION"] = S3_REGION
    child = subprocess.Popen(
        [sys.executable, str(CHILD), faulty_s3.endpoint, images_uri, dataset_uri],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def committing(records: list[RequestRecord]) -> bool:
            return commit.hits == 1 or child.poll() is not None

        seen = faulty_s3.wait_for(committing, timeout_s=60)
        assert child.poll() is None, f"the ingest ended (exit {child.returncode}) before its commit"
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        output, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert "ingest done" not in output

    # The kill came mid-write: the new version's data files were uploaded, its commit not.
    new_data = [
        r for r in seen if r.method == "PUT" and "/images.lance/data/" in r.path and r.status == 200
    ]
    assert new_data, faulty_s3.lines()
    assert _data_keys(s3_store, bucket) > before_files  # orphan files of the lost version

    # Readers still see the previous version, byte for byte.
    after_version, after = _snapshot(dataset_uri, s3_store)
    assert after_version == before_version
    assert after.equals(before)

    # And the next run goes through.
    ingest_images(s3_store, images_uri, dataset_uri, ImageIngestOptions(workers=2))
    final_version, final = _snapshot(dataset_uri, s3_store)
    assert final_version > before_version
    expected = {f"a{i}": photo_variant(60 + i) for i in range(1, 8)} | {"a0": photo_variant(99)}
    assert dict(
        zip(final["image_id"].to_pylist(), final["image_data"].to_pylist(), strict=True)
    ) == (expected)
