"""Errors of the object store: each names the operation and the URI, credentials masked."""

from __future__ import annotations

from typing import NoReturn

from vlm_lake.errors import VLMLakeError
from vlm_lake.store import redact

_NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


class ObjectStoreError(VLMLakeError, OSError):
    """A request to the object store failed, after its retries.

    The message names the operation and the URI; credentials are masked. The client's own
    exception (botocore's) is chained as ``__cause__``, unless its message holds a
    credential (a password in the endpoint URL, say): then it is not chained, so no
    traceback can show it. It is an ``OSError``, like the errors local files raise.

    Attributes:
        operation: What was attempted, for example ``GetObject`` or ``ListObjectsV2``.
        uri: The object or prefix URI.
        code: The S3 error code (``SlowDown``, ``NoSuchBucket`` ...), or the client's
            exception name when there was no S3 answer (a timeout, a dropped connection).
        redacted: Whether a credential was masked in the message.
    """

    def __init__(self, operation: str, uri: str, code: str, detail: str) -> None:
        self.operation = operation
        self.uri = uri
        self.code = code
        message = f"{operation} failed for uri={uri!r} ({code}): {detail}"
        safe = redact.redact(message)
        self.redacted = safe != message
        super().__init__(safe)


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """There is no object at the URI (S3 ``NoSuchKey``), like ``FileNotFoundError`` locally."""


def store_error(operation: str, uri: str, exc: BaseException) -> ObjectStoreError:
    """Translate a botocore exception into an :class:`ObjectStoreError` naming ``uri``."""
    code = type(exc).__name__
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code") or code)
    if code in _NOT_FOUND_CODES:
        return ObjectNotFoundError(operation, uri, code, "no such object")
    return ObjectStoreError(operation, uri, code, str(exc))


def raise_store_error(error: ObjectStoreError, cause: BaseException) -> NoReturn:
    """Raise ``error`` chained to ``cause``, unless ``cause``'s message holds a credential."""
    if error.redacted:
        raise error from None
    raise error from cause


def botocore_errors() -> tuple[type[BaseException], ...]:
    """The two exception roots of botocore (imported on first use: boto3 is slow to import)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def body_read_errors() -> tuple[type[BaseException], ...]:
    """Errors of a GET whose headers arrived but whose body did not (all retryable)."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    return (
        ResponseStreamingError,
        IncompleteReadError,
        ReadTimeoutError,
        ConnectionClosedError,
        Urllib3Error,
    )
