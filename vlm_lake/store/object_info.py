"""What a listing says about one object."""

from __future__ import annotations

from dataclasses import dataclass


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
