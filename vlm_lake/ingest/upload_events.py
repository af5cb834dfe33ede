"""Upload events from an SQS queue fed by the bucket's S3 event notifications.

With ``UPLOAD_EVENTS_QUEUE_URL`` set, ``new_uploads_sensor`` learns of new, changed and
deleted objects from the queue instead of listing the bucket: a tick costs a few
``ReceiveMessage`` calls whatever the bucket holds. The bucket's notification
configuration sends ``s3:ObjectCreated:*`` and ``s3:ObjectRemoved:*`` to the queue
(directly, or through SNS: both message shapes are read). Messages are deleted once the
tick has turned them into a run request; one that comes back (SQS delivers at least once)
carries event ids the sensor has seen and starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from vlm_lake.store import uris
from vlm_lake.store.settings import StoreSettings

log = logging.getLogger(__name__)

#: SQS returns at most 10 messages per ReceiveMessage call.
MAX_MESSAGES_PER_CALL = 10


@dataclass(frozen=True)
class UploadEvent:
    """One object created or removed.

    Attributes:
        uri: ``s3://bucket/key`` of the object (the key URL-decoded).
        kind: ``created`` or ``removed``.
        etag: The new ETag (``created``), else "".
        size: The new size in bytes (``created``), else 0.
        sequencer: S3's per-key ordering token of the event.
    """

    uri: str
    kind: str
    etag: str
    size: int
    sequencer: str

    @property
    def id(self) -> str:
        """Stable id of the event (equal for a redelivered copy of it): 20 hex digits."""
        text = "\n".join((self.kind, self.uri, self.etag, str(self.size), self.sequencer))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:20]

    def under(self, source_uri: str) -> bool:
        """Whether the object belongs to the source at ``source_uri`` (a prefix or object)."""
        source = uris.normalize(source_uri)
        if self.uri == source:
            return True
        return self.uri.startswith(source if source.endswith("/") else source + "/")


def parse_message(body: str) -> list[UploadEvent]:
    """The upload events in one SQS message body.

    Reads S3's notification JSON (``{"Records": [...]}``), the same wrapped by SNS
    (``{"Type": "Notification", "Message": "<json>"}``) and S3's ``s3:TestEvent`` (no
    events). Records of other services or event kinds are skipped.

    Raises:
        ValueError: The body is not JSON or not one of these shapes (names the body).
    """
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = json.loads(data["Message"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"message body {body[:200]!r} is not an S3 event notification (JSON with "
            "'Records', or an SNS notification wrapping one)"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"message body {body[:200]!r} is not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return []
    records = data.get("Records")
    if not isinstance(records, list):
        raise ValueError(f"message body {body[:200]!r} has no 'Records' list")
    return [e for e in (_event(r) for r in records) if e is not None]


def _event(record: Any) -> UploadEvent | None:
    name = str(record.get("eventName", "")) if isinstance(record, dict) else ""
    kind = "created" if name.startswith("ObjectCreated") else None
    kind = "removed" if name.startswith("ObjectRemoved") else kind
    s3 = record.get("s3") if kind else None
    if not isinstance(s3, dict):
        return None
    obj = s3.get("object", {})
    key = unquote_plus(str(obj.get("key", "")))
    bucket = str(s3.get("bucket", {}).get("name", ""))
    etag = str(obj.get("eTag", "")).strip('"') if kind == "created" else ""
    size = int(obj.get("size", 0) or 0) if kind == "created" else 0
    return UploadEvent(f"s3://{bucket}/{key}", kind, etag, size, str(obj.get("sequencer", "")))


@dataclass(frozen=True)
class Received:
    """What one tick took from the queue.

    Attributes:
        events: The events, in the order received.
        receipts: Receipt handles of every message read (to delete them after the tick).
        ignored: Messages that were not S3 event notifications (logged, then deleted).
        calls: ReceiveMessage calls made.
    """

    events: list[UploadEvent]
    receipts: list[str]
    ignored: int
    calls: int


class EventQueue:
    """The SQS queue at ``queue_url``, read with the object store's credentials.

    Args:
        queue_url: The queue's URL (``UPLOAD_EVENTS_QUEUE_URL``).
        settings: Credentials, region and (unless ``endpoint_url``) endpoint.
        endpoint_url: SQS endpoint when it differs from the object store's.
    """

    def __init__(
        self, queue_url: str, settings: StoreSettings, endpoint_url: str | None = None
    ) -> None:
        self.queue_url = queue_url
        self.client = settings.boto3_client("sqs", endpoint_url)

    def receive(self, max_messages: int, deadline: float) -> Received:
        """Take up to ``max_messages`` messages, until the queue is empty or ``deadline``.

        Each call waits at most 1 s for messages (short polling would miss messages on
        other SQS hosts; a long wait would hold the tick). Messages stay invisible to other
        readers for the queue's visibility timeout until :meth:`delete`.
        """
        events: list[UploadEvent] = []
        receipts: list[str] = []
        ignored = calls = 0
        while len(receipts) < max_messages and (calls == 0 or time.monotonic() < deadline):
            batch = min(MAX_MESSAGES_PER_CALL, max_messages - len(receipts))
            reply = self.client.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=batch, WaitTimeSeconds=1
            )
            calls += 1
            messages = reply.get("Messages", [])
            for message in messages:
                receipts.append(message["ReceiptHandle"])
                try:
                    events.extend(parse_message(message.get("Body", "")))
                except ValueError as exc:
                    ignored += 1
                    log.warning("%s: ignoring a message: %s", self.queue_url, exc)
            if not messages:
                break
        return Received(events, receipts, ignored, calls)

    def delete(self, receipts: list[str]) -> int:
        """Delete the messages read (10 per call); returns how many SQS refused.

        A message that could not be deleted comes back after its visibility timeout; its
        events are then recognised as seen, so nothing is lost or run twice.
        """
        failed = 0
        for start in range(0, len(receipts), MAX_MESSAGES_PER_CALL):
            chunk = receipts[start : start + MAX_MESSAGES_PER_CALL]
            reply = self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)],
            )
            failed += len(reply.get("Failed", []))
        if failed:
            log.warning(
                "%s: %d messages could not be deleted; they will come back", self.queue_url, failed
            )
        return failed
