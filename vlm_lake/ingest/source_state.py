"""What a raw source holds right now, as a fingerprint: change detection without reading objects.

A :class:`SourceSnapshot` is computed from the object listing alone (key, ETag, size), so
it costs one paginated ``ListObjectsV2`` per 1,000 objects on S3 (a ``scandir`` locally)
and never downloads a byte of content. The listing is consumed as a stream: memory does not
grow with the number of objects. Any new, changed (new ETag) or deleted object changes the
fingerprint; re-uploading identical bytes to S3 does not (the ETag is the content's MD5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vlm_lake.errors import VLMLakeError
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectStore

#: Objects that count for the images source: all of them. The image ingest turns files that
#: are not images into quarantine rows, so a stray upload is a change the lake must record.
IMAGE_SOURCE_SUFFIXES: tuple[str, ...] | None = None

#: Objects that count for the texts source: all of them, as for images. The text ingest
#: turns a file whose name is not a text source's into a quarantine row (``listing``).
TEXT_SOURCE_SUFFIXES: tuple[str, ...] | None = None

#: Bumped if the fingerprint's encoding ever changes, so old and new never compare equal.
_FINGERPRINT_VERSION = "vlm-lake-source-v1"


class SourceListingError(VLMLakeError):
    """Listing a source failed (missing bucket, denied access, unreachable endpoint)."""


@dataclass(frozen=True)
class SourceSnapshot:
    """The state of one source, from its listing.

    Attributes:
        uri: The normalized source URI (``s3://bucket/prefix`` or an absolute path).
        objects: Number of objects counted.
        total_bytes: Sum of their sizes.
        fingerprint: sha256 (hex) over the URI, then each object's key, ETag and size in
            listing (key) order; equal fingerprints mean the same objects with the same
            content versions.
    """

    uri: str
    objects: int
    total_bytes: int
    fingerprint: str

    @property
    def is_empty(self) -> bool:
        """True when the source holds no matching object (or does not exist)."""
        return self.objects == 0

    def short(self, length: int = 12) -> str:
        """The first ``length`` hex digits of the fingerprint, for tags and messages."""
        return self.fingerprint[:length]


def snapshot(
    store: ObjectStore,
    uri: str,
    suffixes: tuple[str, ...] | None = None,
    *,
    name: str = "uri",
) -> SourceSnapshot:
    """Fingerprint the objects at ``uri`` from their listing, without reading any of them.

    Args:
        store: The object store to list with.
        uri: A prefix/folder URI or a single object/file URI (``s3://``, ``oss://`` or a path).
        suffixes: Count only keys ending with one of these (lower-case, with dot); None
            counts every object.
        name: What ``uri`` is called in error messages, e.g. ``RAW_IMAGES_URI``.

    Returns:
        The snapshot. A prefix with no objects or a missing local folder gives
        ``objects == 0`` (see :attr:`SourceSnapshot.is_empty`), not an error.

    Raises:
        SourceListingError: If the listing itself fails, for example a bucket that does not
            exist, denied access or an unreachable endpoint.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    normalized = uris.normalize(uri)
    digest = hashlib.sha256()
    _update(digest, _FINGERPRINT_VERSION, normalized)
    objects = total_bytes = 0
    try:
        for info in store.list(normalized, suffixes=suffixes):
            _update(digest, info.key, info.etag, str(info.size))
            objects += 1
            total_bytes += info.size
    except (BotoCoreError, ClientError, OSError) as exc:
        raise SourceListingError(
            f"could not list {name}={uri!r} ({normalized}): {exc}; check that the bucket "
            "exists and the endpoint and credentials (AWS_* variables) are right"
        ) from exc
    return SourceSnapshot(normalized, objects, total_bytes, digest.hexdigest())


def images_snapshot(store: ObjectStore, uri: str) -> SourceSnapshot:
    """Snapshot of the images source: every object under ``uri`` (see IMAGE_SOURCE_SUFFIXES)."""
    return snapshot(store, uri, IMAGE_SOURCE_SUFFIXES, name="RAW_IMAGES_URI")


def texts_snapshot(store: ObjectStore, uri: str) -> SourceSnapshot:
    """Snapshot of the texts source: every object at ``uri`` (see TEXT_SOURCE_SUFFIXES)."""
    return snapshot(store, uri, TEXT_SOURCE_SUFFIXES, name="RAW_TEXTS_URI")


def _update(digest: hashlib._Hash, *fields: str) -> None:
    """Feed length-prefixed fields, so no key, ETag or size can be confused with another."""
    for text in fields:
        data = text.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
