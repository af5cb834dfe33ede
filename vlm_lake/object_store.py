"""One object-store client for S3, Aliyun OSS, MinIO and local folders.

``StoreSettings`` holds the connection settings once and derives both a boto3 client (for
listing and reading raw uploads) and Lance ``storage_options`` (for datasets), so the two
can never disagree about endpoint, region, addressing style or credentials.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from vlm_lake import uris

log = logging.getLogger(__name__)

#: Multipart part size for streamed uploads; S3 needs at least 5 MiB per part but the last.
PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoreSettings:
    """Connection settings for an S3-compatible object store.

    Every field is optional: unset credentials fall back to the standard AWS chain
    (environment, profile, instance role), which boto3 and Lance both follow.

    Attributes:
        endpoint_url: Custom endpoint (MinIO, OSS, a test server); None for AWS.
        region: Bucket region, for example ``us-east-1`` or ``cn-hangzhou``.
        access_key_id: Access key id.
        secret_access_key: Secret key; never shown in ``repr``.
        session_token: Temporary session token; never shown in ``repr``.
        virtual_hosted_style: Address buckets as ``bucket.endpoint`` (required by OSS).
        max_attempts: Attempts per request, retries with backoff included.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for a response.
        max_pool_connections: Size of boto3's HTTP connection pool.
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

    def boto3_client(self) -> Any:
        """Build a boto3 S3 client from these settings (thread-safe, share it)."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
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
        opts["client_max_retries"] = str(self.max_attempts)
        opts["connect_timeout"] = f"{int(self.connect_timeout)}s"
        opts["timeout"] = f"{int(self.read_timeout)}s"
        return opts


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
            yield from _walk_in_key_order(p)

    def _list_remote(self, uri: str) -> Iterator[ObjectInfo]:
        bucket, key = uris.split_bucket_key(uri)
        if key and not key.endswith("/"):
            head = self._head(bucket, key)
            if head is not None:
                yield ObjectInfo(uri, key, int(head["ContentLength"]), head["ETag"].strip('"'))
                return
            key += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield ObjectInfo(
                    f"s3://{bucket}/{obj['Key']}",
                    obj["Key"],
                    int(obj["Size"]),
                    obj["ETag"].strip('"'),
                )

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    # -- reading and writing ---------------------------------------------------------------

    def read_bytes(self, uri: str) -> bytes:
        """Return the whole content of one object."""
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return Path(uri).read_bytes()
        bucket, key = uris.split_bucket_key(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def exists(self, uri: str) -> bool:
        """Return True if one object (not a prefix) exists at ``uri``."""
        uri = uris.normalize(uri)
        if not uris.is_remote(uri):
            return Path(uri).is_file()
        bucket, key = uris.split_bucket_key(uri)
        return self._head(bucket, key) is not None

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
        writer = _MultipartWriter(self.client, bucket, key)
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
    """
    entries = sorted(os.scandir(folder), key=lambda e: e.name + ("/" if e.is_dir() else ""))
    for entry in entries:
        if entry.is_dir():
            yield from _walk_in_key_order(Path(entry.path))
        elif entry.is_file():
            yield _local_info(Path(entry.path))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _local_info(p: Path) -> ObjectInfo:
    st = p.stat()
    path = str(p.resolve())
    return ObjectInfo(path, path, st.st_size, f"{st.st_mtime_ns}-{st.st_size}")


class _MultipartWriter(io.RawIOBase):
    """Buffer writes into parts of ``PART_SIZE`` and upload them as an S3 multipart upload."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
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

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            resp = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def finish(self) -> None:
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buf))
            return
        if self._buf:
            self._upload_part(bytes(self._buf))
            self._buf.clear()
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            log.warning("aborting multipart upload of s3://%s/%s", self._bucket, self._key)
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
