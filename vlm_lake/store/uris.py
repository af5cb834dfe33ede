"""Small helpers for the two kinds of location we accept: ``s3://bucket/key`` and local paths."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

S3_SCHEMES = ("s3", "s3a", "oss")


def _scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def is_remote(uri: str) -> bool:
    """Return True when ``uri`` names an object store location rather than a local path."""
    return _scheme(uri) in S3_SCHEMES


def split_bucket_key(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/key`` into ``("bucket", "some/key")``.

    Args:
        uri: An ``s3://``, ``s3a://`` or ``oss://`` URI.

    Returns:
        The bucket name and the key (possibly empty).

    Raises:
        ValueError: If ``uri`` is not an object store URI or has no bucket.
    """
    # Not urlparse: object keys may legally contain '#' and '?', which it would cut off.
    rest = uri.partition("://")[2]
    bucket, _, key = rest.partition("/")
    if not is_remote(uri) or not bucket:
        raise ValueError(
            f"uri={uri!r} is not an object store URI; expected s3://bucket/key "
            f"(schemes allowed: {', '.join(S3_SCHEMES)})"
        )
    return bucket, key.lstrip("/")


def normalize(uri: str) -> str:
    """Return a canonical form: ``s3://bucket/key`` for object stores, an absolute path otherwise.

    ``oss://`` and ``s3a://`` become ``s3://`` because every client we use (boto3, Lance)
    speaks the S3 protocol to OSS and MinIO alike.
    """
    if is_remote(uri):
        bucket, key = split_bucket_key(uri)
        return f"s3://{bucket}/{key}".rstrip("/") if key else f"s3://{bucket}"
    if _scheme(uri) == "file":
        uri = uri.partition("://")[2]
    return os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI or local path with ``/``."""
    base = normalize(base)
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def stem(key: str) -> str:
    """Return the file stem of an object key: ``a/b/image1.jpg`` -> ``image1``."""
    return PurePosixPath(key).stem


def suffix(key: str) -> str:
    """Return the lower-cased extension of an object key, with its dot."""
    return PurePosixPath(key).suffix.lower()
