"""On Spark the driver plans from listings: every object GET is made by the executors.

The S3 calls of this process (the Spark driver) are counted at botocore's one entry
point for API calls; the executors' calls are made by Spark's Python workers (other
processes, which the count does not see) and show up in the S3 server's request log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from helpers import photo_variant, put, recorded_s3_requests

from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.texts import TextIngestOptions, ingest_texts
from vlm_lake.store.object_store import ObjectStore

IMAGES = 12


@pytest.fixture()
def driver_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """S3 operations called from this process, by name."""
    calls: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        calls[operation] += 1
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    yield calls


def test_spark_ingest_downloads_nothing_on_the_driver(
    spark: Any,
    s3_store: ObjectStore,
    bucket: str,
    tmp_path: Path,
    driver_calls: Counter[str],
) -> None:
    for i in range(IMAGES):
        put(s3_store.client, bucket, f"raw/images/p{i:02d}.jpg", photo_variant(i))
    lines = [
        json.dumps({"docid": f"d{i}", "text": f"text {i}", "image_id1": f"p{i:02d}"})
        for i in range(40)
    ]
    put(s3_store.client, bucket, "raw/texts/docs.jsonl", "\n".join(lines).encode())
    driver_calls.clear()
    with recorded_s3_requests() as requests:
        images = ingest_images(
            s3_store,
            f"s3://{bucket}/raw/images/",
            str(tmp_path / "images.lance"),
            ImageIngestOptions(engine="spark", objects_per_task=4),
            spark=spark,
        )
        texts = ingest_texts(
            s3_store,
            f"s3://{bucket}/raw/texts/",
            str(tmp_path / "texts.lance"),
            TextIngestOptions(engine="spark", split_bytes=500),
            spark=spark,
        )
    assert images.inserted == IMAGES and images.tasks == 3
    assert texts.documents == 40 and texts.spark_tasks > 1
    gets = [r for r in requests if r.method == "GET" and "/raw/" in r.path]
    assert len([r for r in gets if r.path.endswith(".jpg")]) == IMAGES  # by the executors
    assert len([r for r in gets if r.path.endswith(".jsonl")]) >= texts.spark_tasks
    assert driver_calls["GetObject"] == 0, driver_calls
    assert driver_calls["ListObjectsV2"] >= 2, driver_calls  # the driver only lists
