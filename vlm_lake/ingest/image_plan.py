"""Plan an image ingest from the listing alone: what to download, what to reject.

No object is read here. The listing is compared with the published ``image_lance``
(``image_id -> (source_uri, source_etag)``): unchanged objects are skipped, objects whose
name is not an image or whose stem another object already uses are rejected, and an object
rejected before at the same ETag is carried over without downloading it again.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vlm_lake.errors import DuplicateKeyError, InvalidImageError, SourceNotFoundError
from vlm_lake.imaging.decode import IMAGE_SUFFIXES
from vlm_lake.ingest.quarantine import RejectedImage, read_rejected_images
from vlm_lake.ingest.spark_plan import SparkPlan, plan_on_spark, stage_listing
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectInfo, ObjectStore
from vlm_lake.store.parallel_listing import list_parallel
from vlm_lake.tables import lance_io
from vlm_lake.tables.contracts import IMAGE_SCHEMA

log = logging.getLogger(__name__)


@dataclass
class ImagePlan:
    """What to download, given the listing and what the lake already holds."""

    to_fetch: list[ObjectInfo]
    rejected: list[RejectedImage]
    unchanged: int
    missing: list[str]
    listed: int
    replaced: set[str] = field(default_factory=set)

    @property
    def downloads(self) -> int:
        """Objects to download."""
        return len(self.to_fetch)


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
    listing: Iterable[ObjectInfo] | None = None,
) -> ImagePlan:
    """Decide which objects to download, from the listing alone (no bytes are read).

    Args:
        store: Object store to list.
        images_uri: The images prefix.
        existing: ``image_id -> (source_uri, source_etag)`` of the published table.
        previous_rejects: Rejections of the previous run; a ``decode`` rejection whose
            object still has the same ETag is carried over without downloading again.
        strict: Raise at the first bad object instead of rejecting it.
        listing: The listing, when the caller has started it (default: list ``images_uri``).

    Returns:
        The plan: objects to fetch (in key order), rejections, and counts.
    """
    rejected: list[RejectedImage] = []
    by_stem: dict[str, list[ObjectInfo]] = {}
    listed = 0
    for info in store.list(images_uri) if listing is None else listing:
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
    replaced: set[str] = set()
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
            if image_id in existing:
                replaced.add(image_id)
    to_fetch.sort(key=lambda i: i.key)
    missing = sorted(set(existing) - set(by_stem))
    return ImagePlan(to_fetch, rejected, unchanged, missing, listed, replaced)


def _existing_images(
    dataset_uri: str, storage: dict[str, str], version: int
) -> dict[str, tuple[str, str]] | None:
    """``image_id -> (source_uri, source_etag)`` of one version; None if its schema is old."""
    ds = lance_io.open_dataset(dataset_uri, storage, version)
    if not ds.schema.equals(IMAGE_SCHEMA):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            version,
        )
        return None
    return lance_io.column_map(ds, "image_id", "source_uri", "source_etag")


def plan_images(
    store: ObjectStore,
    images_uri: str,
    dataset_uri: str,
    base: int | None,
    options: Any,
    rejects_uri: str | None,
    spark: Any = None,
) -> ImagePlan | SparkPlan:
    """Plan from the listing and the published version ``base`` (None: against nothing).

    ``options`` is the ingest's :class:`~vlm_lake.ingest.images.ImageIngestOptions`.

    A listing of up to ``options.plan_on_spark_from`` keys is planned here; a longer one
    (when Spark may be used) is staged to Lance and planned on Spark, so the driver never
    holds every key. An empty source is an error.
    """
    storage = store.storage_options(rejects_uri) if rejects_uri else {}
    previous = read_rejected_images(rejects_uri, storage) if rejects_uri else []
    strict = options.on_bad_input == "fail"
    listing = store.list(images_uri)
    head = list(itertools.islice(listing, options.plan_on_spark_from))
    large = len(head) == options.plan_on_spark_from and options.engine != "local"
    if large and spark is not None and not strict:
        del head  # listed again, in parallel streams, straight into the staging table
        log.info("images: more than %d keys; listing in parallel", options.plan_on_spark_from)
        parallel = list_parallel(store, images_uri, workers=options.list_workers)
        plan = _plan_large(store, parallel, dataset_uri, base, previous, spark)
    else:
        table_storage = store.storage_options(dataset_uri)
        existing = _existing_images(dataset_uri, table_storage, base) if base is not None else {}
        plan = plan_image_ingest(
            store,
            images_uri,
            existing or {},
            previous,
            strict=strict,
            listing=itertools.chain(head, listing),
        )
    if plan.listed == 0:
        raise SourceNotFoundError(
            f"no objects under images_uri={images_uri!r}; expected image files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    return plan


def _plan_large(
    store: ObjectStore,
    listing: Iterator[ObjectInfo],
    dataset_uri: str,
    base: int | None,
    previous: list[RejectedImage],
    spark: Any,
) -> SparkPlan:
    """Stage the listing next to the table and plan it on Spark (see spark_plan)."""
    staging = re.sub(r"(\.lance)?/*$", "", dataset_uri) + ".listing.lance"
    staging_storage = store.storage_options(staging)
    staged = stage_listing(listing, staging, staging_storage)
    log.info("images: %d keys staged at %s; planning on Spark", staged, staging)
    session = spark() if callable(spark) else spark
    return plan_on_spark(
        session,
        listing_uri=staging,
        listing_storage=staging_storage,
        published_uri=dataset_uri if base is not None else None,
        published_storage=store.storage_options(dataset_uri),
        published_version=base,
        previous_rejects=previous,
    )
