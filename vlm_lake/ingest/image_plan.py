"""Plan an image ingest from the listing alone: what to download, what to reject.

No object is read here. The listing is compared with the published ``image_lance``
(``image_id -> (source_uri, source_etag)``): unchanged objects are skipped, objects whose
name is not an image or whose stem another object already uses are rejected, and an object
rejected before at the same ETag is carried over without downloading it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_lake.errors import DuplicateKeyError, InvalidImageError
from vlm_lake.imaging.decode import IMAGE_SUFFIXES
from vlm_lake.ingest.quarantine import RejectedImage
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectInfo, ObjectStore


@dataclass
class ImagePlan:
    """What to download, given the listing and what the lake already holds."""

    to_fetch: list[ObjectInfo]
    rejected: list[RejectedImage]
    unchanged: int
    missing: list[str]
    listed: int


def _reject(info: ObjectInfo, stage: str, reason: str, strict: bool) -> RejectedImage:
    if strict:
        if stage == "duplicate":
            raise DuplicateKeyError(reason)
        raise InvalidImageError(info.uri, reason)
    return RejectedImage(info.uri, uris.stem(info.key), info.etag, info.size, stage, reason)


def plan_image_ingest(
    store: ObjectStore,
    images_uri: str,
    existing: dict[str, tuple[str, str]],
    previous_rejects: list[RejectedImage],
    *,
    strict: bool = False,
) -> ImagePlan:
    """Decide which objects to download, from the listing alone (no bytes are read).

    Args:
        store: Object store to list.
        images_uri: The images prefix.
        existing: ``image_id -> (source_uri, source_etag)`` of the published table.
        previous_rejects: Rejections of the previous run; a ``decode`` rejection whose
            object still has the same ETag is carried over without downloading again.
        strict: Raise at the first bad object instead of rejecting it.

    Returns:
        The plan: objects to fetch (in key order), rejections, and counts.
    """
    rejected: list[RejectedImage] = []
    by_stem: dict[str, list[ObjectInfo]] = {}
    listed = 0
    for info in store.list(images_uri):
        listed += 1
        if uris.suffix(info.key) not in IMAGE_SUFFIXES:
            reason = (
                f"the name does not end in an image extension; expected one of "
                f"{', '.join(IMAGE_SUFFIXES)} (any case)"
            )
            rejected.append(_reject(info, "listing", reason, strict))
            continue
        by_stem.setdefault(uris.stem(info.key), []).append(info)
    known_bad = {(r.source_uri, r.etag): r for r in previous_rejects if r.stage == "decode"}
    to_fetch: list[ObjectInfo] = []
    unchanged = 0
    for image_id, infos in by_stem.items():
        kept_uri = existing.get(image_id, ("", ""))[0]
        winner = next((i for i in infos if i.uri == kept_uri), infos[0])
        for other in infos:
            if other is not winner:
                reason = (
                    f"image_id {image_id!r} of {other.uri!r} is also the file stem of "
                    f"{winner.uri!r}, which was kept; image ids are file stems and must be "
                    "unique across folders (rename one of the files)"
                )
                rejected.append(_reject(other, "duplicate", reason, strict))
        if existing.get(image_id) == (winner.uri, winner.etag):
            unchanged += 1
        elif (winner.uri, winner.etag) in known_bad:
            known = known_bad[(winner.uri, winner.etag)]
            if strict:
                raise InvalidImageError(winner.uri, known.reason)
            rejected.append(known)
        else:
            to_fetch.append(winner)
    to_fetch.sort(key=lambda i: i.key)
    missing = sorted(set(existing) - set(by_stem))
    return ImagePlan(to_fetch, rejected, unchanged, missing, listed)
