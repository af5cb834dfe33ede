"""``scale`` section: what stays flat as the lake grows (issue 13).

Rows (ratio > 1 means ours is better; the targets are for 2 cores):

* ``scale: sensor tick with events, 1k vs 100k objects in the bucket``: the time of a
  ``new_uploads_sensor`` tick that reads 10 upload events from SQS, with 1,000 and with
  100,000 objects under the images prefix (moto serves S3 and SQS on 127.0.0.1). Ratio:
  tick at 1k / tick at 100k; target >= 0.5 (the tick does not grow with the bucket).
* ``scale: ingest planning, driver peak memory, 10k vs 1M keys``: peak Python memory
  (tracemalloc) of planning an incremental image ingest over a synthetic listing of N keys
  staged to Lance and planned on Spark (the path from 200,000 keys). Ratio: peak at 10k /
  peak at 1M; target >= 0.5 (driver memory flat). A second row measures the driver-side
  dict plan used below 200,000 keys (against a published table of N ids, 1% changed), to
  show why large listings do not take it.
* ``scale: training export after 1% of documents changed, full vs incremental``: see
  :mod:`benchmarks.scale_export`; target >= 10.
* ``scale: full materialization, seconds per 1k images, 10k vs 100k images``: see
  :mod:`benchmarks.scale_pipeline`; target >= 0.8.

Not in the default run: ``python -m benchmarks --only scale``.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

from benchmarks.common import Context, Row, row
from benchmarks.s3 import moto_server, settings
from benchmarks.scale_export import export_rows
from benchmarks.scale_pipeline import pipeline_rows

log = logging.getLogger("benchmarks.scale")

EVENTS = 10


def _seed(bucket: str, count: int, data: bytes) -> None:
    """Put ``count`` objects straight into the in-process moto backend (no HTTP per object)."""
    from moto.s3.models import s3_backends

    backend = next(
        b for by_region in s3_backends.values() for b in by_region.values() if bucket in b.buckets
    )
    for i in range(count):
        backend.put_object(bucket, f"raw/img_{i:07d}.jpg", data)


def _tick_seconds(endpoint: str, count: int) -> float:
    """Seconds of a sensor tick that reads ``EVENTS`` events, with ``count`` objects stored."""
    from dagster import DagsterInstance, build_sensor_context

    from dagster_project.definitions import defs
    from resources import LakeResource, ObjectStoreResource, UploadEventsResource

    store_settings = settings(endpoint)
    s3, sqs = store_settings.boto3_client(), store_settings.boto3_client("sqs")
    bucket = f"scale-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    _seed(bucket, count, b"x" * 100)
    s3.put_object(Bucket=bucket, Key="texts/docs.json", Body=b'[{"docid": "d", "text": "t"}]')
    name = f"q-{uuid.uuid4().hex[:8]}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = f"arn:aws:sqs:{store_settings.region}:123456789012:{name}"
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    sqs.purge_queue(QueueUrl=queue)
    resources = {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/raw/",
            raw_texts_uri=f"s3://{bucket}/texts/docs.json",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": ObjectStoreResource(
            endpoint_url=endpoint,
            region_name=store_settings.region,
            aws_access_key_id=store_settings.access_key_id,
            aws_secret_access_key=store_settings.secret_access_key,
        ),
        "upload_events": UploadEventsResource(queue_url=queue, sweep_interval_seconds=3600),
    }
    sensor = defs.resolve_sensor_def("new_uploads_sensor")
    with DagsterInstance.ephemeral() as instance:

        def tick(cursor: str | None) -> Any:
            with build_sensor_context(
                instance=instance, cursor=cursor, resources=resources, definitions=defs
            ) as context:
                return sensor.evaluate_tick(context)

        first = tick(None)  # the first sweep: lists everything once (not timed)
        for i in range(EVENTS):
            s3.put_object(Bucket=bucket, Key=f"raw/new_{i}.jpg", Body=b"y" * 100)
        started = time.perf_counter()
        second = tick(first.cursor)
        seconds = time.perf_counter() - started
    assert second.run_requests, f"no run requested at {count} objects: {second.skip_message}"
    log.info("sensor tick with %d events over %d objects: %.3f s", EVENTS, count, seconds)
    return seconds


class _SyntheticListing:
    """An object store whose listing is ``count`` generated keys (no storage behind it)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def list(self, uri: str, suffixes: Any = None) -> Iterator[Any]:
        from vlm_lake.store.object_info import ObjectInfo

        for i in range(self.count):
            key = f"raw/img_{i:07d}.jpg"
            etag = "changed" if i % 100 == 0 else f"etag{i}"
            yield ObjectInfo(f"s3://b/{key}", key, 50_000, etag)


def _planning_peak_bytes(count: int) -> int:
    """Peak traced memory of an incremental plan over ``count`` keys (1% changed)."""
    from vlm_lake.ingest.image_plan import plan_image_ingest

    tracemalloc.start()
    existing = {f"img_{i:07d}": (f"s3://b/raw/img_{i:07d}.jpg", f"etag{i}") for i in range(count)}
    plan = plan_image_ingest(_SyntheticListing(count), "s3://b/raw/", existing, [])  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plan.to_fetch) == count // 100
    log.info("planning over %d keys: peak %.1f MB", count, peak / 1e6)
    return peak


def _spark_planning_peak_bytes(ctx: Context, count: int) -> int:
    """Peak traced driver memory of staging ``count`` keys and planning them on Spark."""
    from vlm_lake.ingest.spark_plan import plan_on_spark, stage_listing

    spark = ctx.spark()
    staging = str(ctx.work / f"listing-{count}.lance")
    tracemalloc.start()
    stage_listing(_SyntheticListing(count).list(""), staging, {})
    plan = plan_on_spark(
        spark,
        listing_uri=staging,
        listing_storage={},
        published_uri=None,
        published_storage=None,
        published_version=None,
        previous_rejects=[],
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert plan.downloads == count
    plan.release()
    log.info("staged listing + Spark plan over %d keys: peak %.1f MB", count, peak / 1e6)
    return peak


def run(ctx: Context) -> list[Row]:
    """Measure the scale rows."""
    with moto_server(in_process=True) as endpoint:
        small, large = _tick_seconds(endpoint, 1_000), _tick_seconds(endpoint, 100_000)
    peak_small, peak_large = _planning_peak_bytes(10_000), _planning_peak_bytes(1_000_000)
    staged_small = _spark_planning_peak_bytes(ctx, 10_000)
    staged_large = _spark_planning_peak_bytes(ctx, 1_000_000)
    return [
        *export_rows(ctx),
        *pipeline_rows(ctx),
        row(
            "scale: ingest planning, driver peak memory, 10k vs 1M keys",
            staged_large / 1e6,
            staged_small / 1e6,
            "MB, staged listing + Spark plan (ratio: peak at 10k / peak at 1M)",
            higher=False,
        ),
        row(
            "scale: sensor tick with events, 1k vs 100k objects in the bucket",
            large,
            small,
            "seconds (ratio: tick at 1k / tick at 100k)",
            higher=False,
        ),
        row(
            "scale: ingest planning on the driver (below 200k keys), peak memory, 10k vs 1M",
            peak_large / 1e6,
            peak_small / 1e6,
            "MB, dict plan (ratio: peak at 10k / peak at 1M)",
            higher=False,
        ),
    ]
