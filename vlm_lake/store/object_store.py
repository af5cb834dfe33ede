"""One object-store client for S3, Aliyun OSS, MinIO and local folders.

:class:`ObjectStore` lists (streaming, in key order), reads (whole or as a stream) and
writes atomically, on ``s3://`` URIs through boto3 and on local paths through the file
system; :class:`~vlm_lake.store.settings.StoreSettings` holds its connection settings.

Retries: both clients retry throttling (503 ``SlowDown``, 429), server errors (500, 502,
503, 504), dropped connections and timeouts with exponential backoff and jitter, up to
``max_attempts`` attempts per request (see :mod:`vlm_lake.store.settings`). When they give
up, the error raised is an :class:`~vlm_lake.store.errors.ObjectStoreError` that names the
URI and the operation, with any credential masked (:mod:`vlm_lake.store.redact`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vlm_lake.store import uris
from vlm_lake.store.errors import (
    ObjectNotFoundError,
    ObjectStoreError,
    body_read_errors,
    botocore_errors,
    raise_store_error,
    store_error,
)
from vlm_lake.store.local_files import current_umask, local_info, walk_in_key_order
from vlm_lake.store.multipart import MultipartWriter
from vlm_lake.store.object_info import ObjectInfo
from vlm_lake.store.settings import StoreSettings

log = logging.getLogger(__name__)

#: Ceiling of one backoff sleep between re-downloads, in seconds (botocore uses 20 too).
MAX_BACKOFF_S = 20.0

__all__ = [
    "ListPage",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "StoreSettings",
]


@dataclass(frozen=True)
class ListPage:
    """One page of a listing: its objects, the key to continue after, whether more follow."""

    objects: list[ObjectInfo]
    last_key: str
    truncated: bool


def page_objects(bucket: str, contents: list[dict[str, Any]]) -> list[ObjectInfo]:
    """The objects of one ``ListObjectsV2`` page's ``Contents`` (folder markers left out)."""
    return [
        ObjectInfo(f"s3://{bucket}/{o['Key']}", o["Key"], int(o["Size"]), o["ETag"].strip('"'))
        for o in contents
        if not o["Key"].endswith("/")
    ]


def _local_page(path: str, start_after: str, page_size: int) -> ListPage:
    """A page of a local folder's files in key order (the walk restarts at each page)."""
    p = Path(path)
    if p.is_file():
        info = local_info(p)
        done = bool(start_after) and start_after >= info.key
        return ListPage([] if done else [info], info.key, False)
    if not p.is_dir():
        return ListPage([], start_after, False)
    items = (i for i in walk_in_key_order(p.resolve()) if i.key > start_after)
    objects = list(itertools.islice(items, page_size + 1))
    truncated = len(objects) > page_size
    objects = objects[:page_size]
    return ListPage(objects, objects[-1].key if objects else start_after, truncated)


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

    def list_page(self, uri: str, start_after: str = "", page_size: int = 1000) -> ListPage:
        """One page of the listing at ``uri``: at most one LIST call, in key order.

        Resumable across calls (and sensor ticks): pass the previous page's ``last_key`` as
        ``start_after``. A single object (or file) URI is one page of itself.

        Args:
            uri: An object/file URI or a prefix/folder URI.
            start_after: Return only keys after this one ("" from the start).
            page_size: Keys per page (S3 returns at most 1,000).

        Raises:
            ObjectStoreError: The LIST call failed after retries (names ``uri``).
        """
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return _local_page(uri, start_after, page_size)
        bucket, key = uris.split_bucket_key(uri)
        if key and not key.endswith("/"):
            head = self._head(bucket, key, uri) if not start_after else None
            if head is not None:
                etag = head["ETag"].strip('"')
                return ListPage(
                    [ObjectInfo(uri, key, int(head["ContentLength"]), etag)], key, False
                )
            if start_after and start_after == key:
                return ListPage([], key, False)
            key += "/"
        try:
            page = self.client.list_objects_v2(
                Bucket=bucket, Prefix=key, StartAfter=start_after, MaxKeys=page_size
            )
        except botocore_errors() as exc:
            raise_store_error(store_error("ListObjectsV2", uri, exc), exc)
        contents = page.get("Contents", [])
        last = contents[-1]["Key"] if contents else start_after
        return ListPage(page_objects(bucket, contents), last, bool(page.get("IsTruncated")))

    def _list_local(self, path: str) -> Iterator[ObjectInfo]:
        p = Path(path)
        if p.is_file():
            yield local_info(p)
            return
        if p.is_dir():
            yield from walk_in_key_order(p.resolve())

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
            except botocore_errors() as exc:
                raise_store_error(store_error("ListObjectsV2", uri, exc), exc)
            yield from page_objects(bucket, page.get("Contents", []))

    def _head(self, bucket: str, key: str, uri: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except botocore_errors() as exc:
            error = store_error("HeadObject", uri, exc)
            if isinstance(error, ObjectNotFoundError):
                return None
            raise_store_error(error, exc)

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
            except botocore_errors() as exc:
                raise_store_error(store_error("GetObject", uri, exc), exc)
            try:
                with contextlib.closing(body):
                    return body.read()  # type: ignore[no-any-return]
            except body_read_errors() as exc:
                if attempt == attempts:
                    error = ObjectStoreError(
                        "GetObject",
                        uri,
                        type(exc).__name__,
                        f"the download was cut short {attempts} time(s), last: {exc}",
                    )
                    raise_store_error(error, exc)
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

    def read_range(self, uri: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of one object (fewer if it ends first).

        Raises:
            ObjectNotFoundError: No object at ``uri``.
            ObjectStoreError: The request failed after retries (names ``uri``).
        """
        if not 0 <= start < stop:
            raise ValueError(f"start={start!r}, stop={stop!r}: need 0 <= start < stop")
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            with Path(uri).open("rb") as local:
                local.seek(start)
                return local.read(stop - start)
        bucket, key = uris.split_bucket_key(uri)
        try:
            resp = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
            with contextlib.closing(resp["Body"]) as body:
                return body.read()  # type: ignore[no-any-return]
        except botocore_errors() as exc:
            raise_store_error(store_error("GetObject", uri, exc), exc)
        except body_read_errors() as exc:
            raise_store_error(ObjectStoreError("GetObject", uri, type(exc).__name__, str(exc)), exc)

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
        except botocore_errors() as exc:
            raise_store_error(store_error("GetObject", uri, exc), exc)
        with contextlib.closing(body):
            try:
                yield body
            except body_read_errors() as exc:
                error = ObjectStoreError("GetObject", uri, type(exc).__name__, str(exc))
                raise_store_error(error, exc)

    def exists(self, uri: str) -> bool:
        """Return True if one object (not a prefix) exists at ``uri``."""
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return Path(uri).is_file()
        bucket, key = uris.split_bucket_key(uri)
        return self._head(bucket, key, uri) is not None

    def delete(self, uri: str) -> None:
        """Delete one object; nothing happens if it does not exist.

        Raises:
            ObjectStoreError: The request failed after retries (names ``uri``).
        """
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            Path(uri).unlink(missing_ok=True)
            return
        bucket, key = uris.split_bucket_key(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except botocore_errors() as exc:
            raise_store_error(store_error("DeleteObject", uri, exc), exc)

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
                os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would stick
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        bucket, key = uris.split_bucket_key(uri)
        writer = MultipartWriter(self.client, bucket, key, uri)
        try:
            yield writer  # type: ignore[misc]
            writer.finish()
        except BaseException:
            writer.abort()
            raise
