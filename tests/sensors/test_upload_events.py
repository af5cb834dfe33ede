"""new_uploads_sensor with an SQS queue of S3 event notifications (moto serves both)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from helpers import photo_variant, put, upload_seed_example
from sensor_helpers import (
    IMAGES_PREFIX,
    TEXTS_KEY,
    Tick,
    evaluate,
    recorded_s3_requests,
    seed_layout_resources,
    seed_objects,
)

from resources import ObjectStoreResource, UploadEventsResource
from vlm_lake.ingest.upload_events import parse_message
from vlm_lake.store.settings import StoreSettings

ACCOUNT = "123456789012"


@pytest.fixture()
def queue_url(s3_settings: StoreSettings, s3_store: Any, bucket: str) -> str:
    """A fresh SQS queue that receives the bucket's ObjectCreated/ObjectRemoved events."""
    return notify_queue(s3_settings, s3_store, bucket)


def notify_queue(s3_settings: StoreSettings, s3_store: Any, bucket: str) -> str:
    """Create a queue and send the bucket's object events to it; returns its URL."""
    sqs = s3_settings.boto3_client("sqs")
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = f"arn:aws:sqs:{s3_settings.region}:{ACCOUNT}:{name}"
    s3_store.client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    _drain(sqs, url)  # moto sends an s3:TestEvent when the configuration is set
    return url


def _drain(sqs: Any, url: str) -> list[str]:
    """Take every message off the queue (an event 'lost' on purpose); returns the bodies."""
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _resources(
    bucket: str, store: ObjectStoreResource, queue_url: str, sweep_every: int
) -> dict[str, Any]:
    events = UploadEventsResource(queue_url=queue_url, sweep_interval_seconds=sweep_every)
    return seed_layout_resources(bucket, store, events)


def _lists(requests: list[Any]) -> list[Any]:
    return [r for r in requests if r.method == "GET" and "list-type" in r.query]


def test_an_upload_event_starts_one_run_and_a_redelivery_none(
    s3_store, bucket, queue_url, object_store_resource, s3_settings
) -> None:
    upload_seed_example(s3_store.client, bucket)
    sqs = s3_settings.boto3_client("sqs")
    _drain(sqs, queue_url)  # the seed's own events: the first sweep covers them
    resources = _resources(bucket, object_store_resource, queue_url, sweep_every=3600)
    first = evaluate(None, resources)  # no cursor: the first sweep is due
    assert first.run.tags["vlm_lake/images_objects"] == "3"

    put(s3_store.client, bucket, f"{IMAGES_PREFIX}new.jpg", photo_variant(7))
    peek = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, WaitTimeSeconds=1)
    body = peek["Messages"][0]["Body"]  # kept, to deliver it again below
    with recorded_s3_requests() as requests:
        second = evaluate(first.cursor, resources)
    assert _lists(requests) == []  # the sweep is not due: the queue said what changed
    assert second.run.tags["vlm_lake/events"] == "1"
    assert second.run.tags["vlm_lake/changed_sources"] == "images"
    assert "image_lance" in second.selected and "text_lance" not in second.selected
    assert second.run.run_key != first.run.run_key
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None

    sqs.send_message(QueueUrl=queue_url, MessageBody=body)  # SQS delivers at least once
    third = evaluate(second.cursor, resources)
    assert third.run_requests == [] and "1 seen before" in (third.skip_message or "")
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None


def test_a_deleted_object_starts_a_run(
    s3_store, bucket, queue_url, object_store_resource, s3_settings
) -> None:
    upload_seed_example(s3_store.client, bucket)
    _drain(s3_settings.boto3_client("sqs"), queue_url)
    resources = _resources(bucket, object_store_resource, queue_url, sweep_every=3600)
    first = evaluate(None, resources)
    s3_store.client.delete_object(Bucket=bucket, Key=f"{IMAGES_PREFIX}image2.jpg")
    second = evaluate(first.cursor, resources)
    assert second.run.tags["vlm_lake/changed_sources"] == "images"
    assert second.run.tags["vlm_lake/events"] == "1"
    assert evaluate(second.cursor, resources).run_requests == []


def test_a_lost_event_is_caught_by_the_sweep(
    s3_store, bucket, queue_url, object_store_resource, s3_settings
) -> None:
    upload_seed_example(s3_store.client, bucket)
    sqs = s3_settings.boto3_client("sqs")
    _drain(sqs, queue_url)
    spaced = _resources(bucket, object_store_resource, queue_url, sweep_every=3600)
    first = evaluate(None, spaced)
    put(s3_store.client, bucket, TEXTS_KEY, b'[{"docid": "d1", "text": "t"}]')
    assert _drain(sqs, queue_url)  # the event is lost
    assert evaluate(first.cursor, spaced).run_requests == []  # no event, no sweep due
    due = _resources(bucket, object_store_resource, queue_url, sweep_every=0)
    swept = evaluate(first.cursor, due)
    assert swept.run.tags["vlm_lake/changed_sources"] == "texts"
    assert swept.run.tags["vlm_lake/events"] == "0"
    assert evaluate(swept.cursor, due).run_requests == []  # the next round is the same


def test_an_empty_source_skips_and_leaves_the_messages_queued(
    s3_store, bucket, queue_url, object_store_resource, s3_settings
) -> None:
    put(s3_store.client, bucket, TEXTS_KEY, b'[{"docid": "d1", "text": "t"}]')  # no images
    resources = _resources(bucket, object_store_resource, queue_url, sweep_every=0)
    result = evaluate(None, resources)
    assert result.run_requests == [] and "no objects at RAW_IMAGES_URI" in result.skip_message
    attributes = s3_settings.boto3_client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # read, not deleted


def test_a_tick_over_20000_objects_makes_no_list_call_with_the_queue(
    s3_store, bucket, object_store_resource, s3_settings
) -> None:
    variants = [photo_variant(i, size=(16, 12)) for i in range(8)]
    seed_objects(
        bucket, ((f"{IMAGES_PREFIX}img_{i:05d}.jpg", variants[i % 8]) for i in range(20_000))
    )
    put(s3_store.client, bucket, TEXTS_KEY, b'[{"docid": "d1", "text": "t"}]')
    queue_url = notify_queue(s3_settings, s3_store, bucket)  # events from here on
    resources = _resources(bucket, object_store_resource, queue_url, sweep_every=3600)
    with recorded_s3_requests() as requests:
        first = evaluate(None, resources)
    assert first.run.tags["vlm_lake/images_objects"] == "20000"
    assert len([r for r in _lists(requests) if r.query.get("prefix") == [IMAGES_PREFIX]]) == 20

    put(s3_store.client, bucket, f"{IMAGES_PREFIX}zzz_new.jpg", variants[0])
    with recorded_s3_requests() as requests:
        second: Tick = evaluate(first.cursor, resources)
    assert _lists(requests) == [] and second.run.tags["vlm_lake/events"] == "1"
    assert len(second.cursor or "") < 2000


def test_a_sweep_slice_per_tick_bounds_the_list_calls(
    s3_store, bucket, object_store_resource
) -> None:
    """Without a queue, a large source is swept across ticks; the run comes at round end."""
    variants = [photo_variant(i, size=(16, 12)) for i in range(4)]
    seed_objects(bucket, ((f"{IMAGES_PREFIX}i{i:05d}.jpg", variants[i % 4]) for i in range(5000)))
    put(s3_store.client, bucket, TEXTS_KEY, b'[{"docid": "d1", "text": "t"}]')
    resources = _resources(bucket, object_store_resource, "", sweep_every=0)
    resources["upload_events"] = UploadEventsResource(max_list_pages_per_tick=2)
    cursor, pages = None, []
    for _ in range(3):
        with recorded_s3_requests() as requests:
            tick = evaluate(cursor, resources)
        pages.append(len([r for r in _lists(requests) if r.query.get("prefix") == [IMAGES_PREFIX]]))
        if tick.run_requests:
            break
        assert "sweep at" in (tick.skip_message or "")
        cursor = tick.cursor
    assert pages == [2, 2, 1]  # 5,000 keys: pages of 1,000, two per tick
    assert tick.run.tags["vlm_lake/images_objects"] == "5000"


def test_s3_event_messages_are_parsed_in_every_shape() -> None:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "raw"},
            "object": {"key": "imgs/a+b%C3%A9.jpg", "eTag": "abc", "size": 12, "sequencer": "01"},
        },
    }
    direct = json.dumps({"Records": [record]})
    (event,) = parse_message(direct)
    assert (event.uri, event.kind, event.etag, event.size) == (
        "s3://raw/imgs/a bé.jpg",
        "created",
        "abc",
        12,
    )
    assert (
        event.under("s3://raw/imgs/")
        and event.under("s3://raw/imgs")
        and not event.under("s3://raw/im")
    )
    sns = json.dumps({"Type": "Notification", "Message": direct})
    assert parse_message(sns) == [event] and parse_message(sns)[0].id == event.id
    removed = dict(record, eventName="ObjectRemoved:Delete")
    (gone,) = parse_message(json.dumps({"Records": [removed]}))
    assert gone.kind == "removed" and gone.etag == "" and gone.id != event.id
    assert parse_message(json.dumps({"Event": "s3:TestEvent", "Bucket": "raw"})) == []
    other = dict(record, eventName="ObjectRestore:Completed")
    assert parse_message(json.dumps({"Records": [other]})) == []
    with pytest.raises(ValueError, match=r"message body 'not json' is not an S3 event"):
        parse_message("not json")
    with pytest.raises(ValueError, match=r"has no 'Records' list"):
        parse_message("{}")
