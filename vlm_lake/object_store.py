"""One object-store client for S3, Aliyun OSS, MinIO and local folders.

``StoreSettings`` holds the connection settings once and derives both a boto3 client (for
listing and reading raw uploads) and Lance ``storage_options`` (for datasets), so the two
can never disagree about endpoint, region, addressing style or credentials.

Retries: both clients retry throttling (503 ``SlowDown``, 429), server errors (500, 502,
503, 504), dropped connections and timeouts with exponential backoff and jitter, up to
``max_attempts`` attempts per request (see :meth:`StoreSettings.boto3_client` and
:meth:`StoreSettings.lance_storage_options`). When they give up, the error raised here is
an :class:`ObjectStoreError` that names the URI and the operation, with any credential
masked (:mod:`vlm_lake.redact`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlparse

from vlm_lake import redact, uris
from vlm_lake.errors import VLMLakeError

log = logging.getLogger(__name__)

#: Multipart part size for streamed uploads; S3 needs at least 5 MiB per part but the last.
PART_SIZE = 8 * 1024 * 1024

#: Ceiling of one backoff sleep between re-downloads, in seconds (botocore uses 20 too).
MAX_BACKOFF_S = 20.0

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


def _store_error(operation: str, uri: str, exc: BaseException) -> ObjectStoreError:
    """Translate a botocore exception into an :class:`ObjectStoreError` naming ``uri``."""
    code = type(exc).__name__
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code") or code)
    if code in _NOT_FOUND_CODES:
        return ObjectNotFoundError(operation, uri, code, "no such object")
    return ObjectStoreError(operation, uri, code, str(exc))


def _raise_store_error(error: ObjectStoreError, cause: BaseException) -> NoReturn:
    """Raise ``error`` chained to ``cause``, unless ``cause``'s message holds a credential."""
    if error.redacted:
        raise error from None
    raise error from cause


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _body_read_errors() -> tuple[type[BaseException], ...]:
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


@dataclass(frozen=True)
class StoreSettings:
    """Connection settings for an S3-compatible object store.

    Every field is optional: unset credentials fall back to the standard AWS chain
    (environment, profile, instance role), which boto3 and Lance both follow.

    Attributes:
        endpoint_url: Custom endpoint (MinIO, OSS, a test server); None for AWS.
        region: Bucket region, for example ``us-east-1`` or ``cn-hangzhou``.
        access_key_id: Access key id (shown in ``repr``, masked in logs and errors).
        secret_access_key: Secret key; never shown in ``repr``.
        session_token: Temporary session token; never shown in ``repr``.
        virtual_hosted_style: Address buckets as ``bucket.endpoint`` (required by OSS).
        max_attempts: Attempts per request (the first one included), for boto3 and Lance
            alike; throttling, 5xx, dropped connections and timeouts are retried with
            exponential backoff and jitter. At least 1.
        connect_timeout: Seconds to wait for a connection (> 0).
        read_timeout: Seconds to wait for a response: boto3's per-read socket timeout, and
            Lance's whole-request timeout (> 0).
        max_pool_connections: Size of boto3's HTTP connection pool.

    The credentials are registered with :mod:`vlm_lake.redact` when the settings are
    created, so they are masked in every log record and in the errors raised here.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    virtual_hosted_style: bool = False
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts!r} must be an integer >= 1")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}={value!r} must be a number of seconds > 0")
        if self.max_pool_connections < 1:
            raise ValueError(f"max_pool_connections={self.max_pool_connections!r} must be >= 1")
        url_password = urlparse(self.endpoint_url).password if self.endpoint_url else None
        secrets = (self.access_key_id, self.secret_access_key, self.session_token, url_password)
        for secret in secrets:
            redact.register_secret(secret)
        if any(secrets):
            redact.install_log_redaction()

    def boto3_client(self) -> Any:
        """Build a boto3 S3 client from these settings (thread-safe, share it).

        Retries use botocore's ``standard`` mode: throttling errors (``SlowDown``,
        ``Throttling``, 429), transient errors (500, 502, 503, 504) and connection errors and
        timeouts are retried, ``max_attempts`` attempts in all (botocore's
        ``total_max_attempts``), with truncated exponential
        backoff and full jitter (1 s base for throttling, 50 ms otherwise, at most 20 s),
        honouring ``x-amz-retry-after``. ``adaptive`` mode is not used: it adds a client-side
        token bucket that makes every thread sharing the client wait after any throttle
        response, and botocore documents it as experimental; the download pool is bounded
        anyway, and standard mode's retry quota already stops retry storms.
        """
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            # total_max_attempts counts the first attempt (like AWS_MAX_ATTEMPTS); botocore's
            # "max_attempts" key would count retries only, one attempt more than asked.
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            s3={"addressing_style": "virtual" if self.virtual_hosted_style else "path"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            # OSS and older MinIO reject the CRC trailers newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            config=config,
        )

    def lance_storage_options(self, uri: str | None = None) -> dict[str, str]:
        """Lance/object_store options equivalent to :meth:`boto3_client`.

        Args:
            uri: The dataset URI. With virtual-hosted-style addressing and a custom endpoint,
                Lance expects the bucket inside the endpoint (``https://bucket.host``), so the
                bucket is taken from this URI.

        Returns:
            A dict for ``lance.dataset(..., storage_options=...)``; empty for local paths.

        Retry and timeout keys (names as Lance 14 reads them, from ``lance-io``):
        ``client_max_retries`` (object_store's ``RetryConfig.max_retries``: retries after
        the first attempt, so ``max_attempts - 1``; object_store retries 5xx, 429, connection
        errors and timeouts with exponential backoff from 100 ms, base 2, at most 15 s, with
        jitter), ``download_retry_count`` (re-reads of a response body cut short, also
        ``max_attempts - 1``), ``connect_timeout`` and ``timeout`` (object_store's
        whole-request timeout) as durations (``30s``, ``5500ms``). ``client_retry_timeout``
        (180 s) is left at Lance's default. Lance also retries a request whose retries ran
        out a few more times in its rate-limiting (AIMD) layer, which also slows down its
        request rate after throttling; that layer keeps Lance's defaults.
        """
        if uri is not None and not uris.is_remote(uri):
            return {}
        opts: dict[str, str] = {}
        if self.endpoint_url:
            endpoint = self.endpoint_url.rstrip("/")
            if self.virtual_hosted_style and uri is not None:
                bucket, _ = uris.split_bucket_key(uri)
                parsed = urlparse(endpoint)
                if not parsed.netloc.startswith(f"{bucket}."):
                    endpoint = f"{parsed.scheme}://{bucket}.{parsed.netloc}{parsed.path}"
            opts["aws_endpoint"] = endpoint
            if endpoint.startswith("http://"):
                opts["allow_http"] = "true"
        if self.region:
            opts["aws_region"] = self.region
        if self.access_key_id:
            opts["aws_access_key_id"] = self.access_key_id
        if self.secret_access_key:
            opts["aws_secret_access_key"] = self.secret_access_key
        if self.session_token:
            opts["aws_session_token"] = self.session_token
        opts["virtual_hosted_style_request"] = "true" if self.virtual_hosted_style else "false"
        opts["client_max_retries"] = str(self.max_attempts - 1)
        opts["download_retry_count"] = str(self.max_attempts - 1)
        opts["connect_timeout"] = _duration(self.connect_timeout)
        opts["timeout"] = _duration(self.read_timeout)
        return opts


def _duration(seconds: float) -> str:
    """Seconds as an object_store duration: ``30s``, or ``5500ms`` when not whole seconds."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object.

    Attributes:
        uri: Full URI (``s3://bucket/key`` or an absolute local path).
        key: Key relative to the bucket (S3) or the absolute path (local).
        size: Size in bytes.
        etag: S3 ETag, or ``mtime_ns-size`` for local files; changes when content changes.
    """

    uri: str
    key: str
    size: int
    etag: str


class ObjectStore:
    """List, read and atomically write objects on S3-compatible stores or local folders.

    Args:
        settings: Connection settings; only used for ``s3://`` URIs.
    """

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The shared boto3 client, created on first use (boto3 clients are thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = self.settings.boto3_client()
            return self._client

    def storage_options(self, uri: str) -> dict[str, str]:
        """Lance storage options for ``uri`` (empty for local paths)."""
        return self.settings.lance_storage_options(uris.normalize(uri))

    # -- listing -------------------------------------------------------------------------

    def list(self, uri: str, suffixes: tuple[str, ...] | None = None) -> Iterator[ObjectInfo]:
        """Yield the objects at ``uri``: the object itself if it is one, else all under it.

        Listing is paginated on S3 and sorted by key, so it streams any number of objects.

        Args:
            uri: An object/file URI or a prefix/folder URI.
            suffixes: Keep only keys ending with one of these (lower-case, with dot).

        Yields:
            ObjectInfo for each matching object, in key order.

        Raises:
            ObjectStoreError: Listing failed after retries (names ``uri``), for example a
                bucket that does not exist or an endpoint that keeps failing.
        """
        uri = uris.normalize(uri)
        items = self._list_remote(uri) if uris.is_remote(uri) else self._list_local(uri)
        for info in items:
            if suffixes is None or uris.suffix(info.key) in suffixes:
                yield info

    def _list_local(self, path: str) -> Iterator[ObjectInfo]:
        p = Path(path)
        if p.is_file():
            yield _local_info(p)
            return
        if p.is_dir():
            yield from _walk_in_key_order(p.resolve())

    def _list_remote(self, uri: str) -> Iterator[ObjectInfo]:
        bucket, key = uris.split_bucket_key(uri)
        if key and not key.endswith("/"):
            head = self._head(bucket, key, uri)
            if head is not None:
                yield ObjectInfo(uri, key, int(head["ContentLength"]), head["ETag"].strip('"'))
                return
            key += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=bucket, Prefix=key))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except _botocore_errors() as exc:
                _raise_store_error(_store_error("ListObjectsV2", uri, exc), exc)
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield ObjectInfo(
                    f"s3://{bucket}/{obj['Key']}",
                    obj["Key"],
                    int(obj["Size"]),
                    obj["ETag"].strip('"'),
                )

    def _head(self, bucket: str, key: str, uri: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except _botocore_errors() as exc:
            error = _store_error("HeadObject", uri, exc)
            if isinstance(error, ObjectNotFoundError):
                return None
            _raise_store_error(error, exc)

    # -- reading and writing ---------------------------------------------------------------

    def read_bytes(self, uri: str) -> bytes:
        """Return the whole content of one object.

        On S3 the request itself is retried by boto3; a body cut short after the headers
        arrived (dropped connection, read timeout) is downloaded again, up to
        ``max_attempts`` downloads in all, with the same jittered exponential backoff.

        Raises:
            ObjectNotFoundError: No object at ``uri`` (also a ``FileNotFoundError``).
            ObjectStoreError: The download failed after retries (names ``uri``).
        """
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return Path(uri).read_bytes()
        bucket, key = uris.split_bucket_key(uri)
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            except _botocore_errors() as exc:
                _raise_store_error(_store_error("GetObject", uri, exc), exc)
            try:
                with contextlib.closing(body):
                    return body.read()  # type: ignore[no-any-return]
            except _body_read_errors() as exc:
                if attempt == attempts:
                    error = ObjectStoreError(
                        "GetObject",
                        uri,
                        type(exc).__name__,
                        f"the download was cut short {attempts} time(s), last: {exc}",
                    )
                    _raise_store_error(error, exc)
                delay = random.random() * min(2.0 ** (attempt - 1), MAX_BACKOFF_S)
                log.warning(
                    "re-downloading %s (attempt %d of %d) in %.2fs: %s",
                    uri,
                    attempt + 1,
                    attempts,
                    delay,
                    exc,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[BinaryIO]:
        """Open one object for streaming reads (``.read(n)``), without loading it whole.

        Locally a file; on S3 the body of one ``GetObject`` (the request is retried by
        boto3; a connection dropped mid-stream raises, so the caller reads again).

        Raises:
            ObjectNotFoundError: No object at ``uri`` (also a ``FileNotFoundError``).
            ObjectStoreError: The request failed after retries (names ``uri``).
        """
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            with Path(uri).open("rb") as local:
                yield local
            return
        bucket, key = uris.split_bucket_key(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except _botocore_errors() as exc:
            _raise_store_error(_store_error("GetObject", uri, exc), exc)
        with contextlib.closing(body):
            try:
                yield body
            except _body_read_errors() as exc:
                error = ObjectStoreError("GetObject", uri, type(exc).__name__, str(exc))
                _raise_store_error(error, exc)

    def exists(self, uri: str) -> bool:
        """Return True if one object (not a prefix) exists at ``uri``."""
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return Path(uri).is_file()
        bucket, key = uris.split_bucket_key(uri)
        return self._head(bucket, key, uri) is not None

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` to ``uri`` atomically."""
        with self.open_atomic_writer(uri) as out:
            out.write(data)

    @contextlib.contextmanager
    def open_atomic_writer(self, uri: str) -> Iterator[BinaryIO]:
        """Open a streaming writer whose object appears only if the block finishes.

        Local files are written to a temporary sibling and renamed; S3 objects are streamed
        as a multipart upload that is completed on success and aborted on error. Either
        way a failure leaves the previous object untouched.

        Args:
            uri: Destination object URI or local path.

        Yields:
            A binary file-like object to ``write`` to.

        Raises:
            ObjectStoreError: An upload request failed after retries (names ``uri``); the
                multipart upload is aborted. Errors raised inside the block propagate as
                they are.
        """
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            path = Path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    yield fh
                os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would stick
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        bucket, key = uris.split_bucket_key(uri)
        writer = _MultipartWriter(self.client, bucket, key, uri)
        try:
            yield writer  # type: ignore[misc]
            writer.finish()
        except BaseException:
            writer.abort()
            raise


def _walk_in_key_order(folder: Path) -> Iterator[ObjectInfo]:
    """Yield files under ``folder`` in the order S3 lists keys (byte-wise by full path).

    Sorting a folder's entries with ``name/`` for sub-folders and recursing in that order
    gives the lexicographic order of full paths, streaming, without listing everything.

    ``folder`` must be resolved (absolute, no symbolic links): every path built under it is
    then resolved already, so only the symbolic links met on the way are resolved again
    (resolving every file costs a system call per path component, per file).
    """
    entries = sorted(os.scandir(folder), key=lambda e: e.name + ("/" if e.is_dir() else ""))
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():
            yield from _walk_in_key_order(path.resolve() if entry.is_symlink() else path)
        elif entry.is_file():
            yield _local_info(path, resolved=not entry.is_symlink())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _local_info(p: Path, *, resolved: bool = False) -> ObjectInfo:
    st = p.stat()
    path = str(p) if resolved else str(p.resolve())
    return ObjectInfo(path, path, st.st_size, f"{st.st_mtime_ns}-{st.st_size}")


class _MultipartWriter(io.RawIOBase):
    """Buffer writes into parts of ``PART_SIZE`` and upload them as an S3 multipart upload."""

    def __init__(self, client: Any, bucket: str, key: str, uri: str) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._uri = client, bucket, key, uri
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        self._buf += b
        while len(self._buf) >= PART_SIZE:
            self._upload_part(bytes(self._buf[:PART_SIZE]))
            del self._buf[:PART_SIZE]
        return len(b)

    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """Call one S3 operation (boto3 retries it); a final failure names the URI."""
        try:
            return getattr(self._client, method)(  # type: ignore[no-any-return]
                Bucket=self._bucket, Key=self._key, **kwargs
            )
        except _botocore_errors() as exc:
            _raise_store_error(_store_error(operation, self._uri, exc), exc)

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            resp = self._call("CreateMultipartUpload", "create_multipart_upload")
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = self._call(
            "UploadPart", "upload_part", UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def finish(self) -> None:
        if self._upload_id is None:
            self._call("PutObject", "put_object", Body=bytes(self._buf))
            return
        if self._buf:
            self._upload_part(bytes(self._buf))
            self._buf.clear()
        self._call(
            "CompleteMultipartUpload",
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Abort the multipart upload, if one was started.

        Called while another error propagates, so a failure to abort is logged, not raised:
        it must not hide the error that made the write fail. A bucket lifecycle rule
        (``AbortIncompleteMultipartUpload``) cleans up what is left.
        """
        if self._upload_id is None:
            return
        log.warning("aborting multipart upload of %s", self._uri)
        try:
            self._call("AbortMultipartUpload", "abort_multipart_upload", UploadId=self._upload_id)
        except ObjectStoreError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self._uri, exc)
