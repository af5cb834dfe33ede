"""Write, check, then publish: a Lance tag marks the last version that passed its checks.

Dagster's default leaves a failed check's data in place for every reader. Here a writer
commits a *candidate* version, the checks read that version, and only when every blocking
check passes does :func:`publish` move the ``published`` tag to it. Readers (the next
asset, :class:`~vlm_lake.training.dataset.VLMDataset`) open the tag, so a failed candidate is
never seen. The tag's metadata records what the version was built from (the lineage the
incremental join needs) and which version it is, so a crash between moving the tag and
writing its metadata is detected instead of trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlm_lake.errors import DatasetNotFoundError, NotPublishedError
from vlm_lake.tables.lance_io import open_dataset

if TYPE_CHECKING:
    import lance

log = logging.getLogger(__name__)

PUBLISHED_TAG = "published"


@dataclass(frozen=True)
class Published:
    """The published version of a dataset and the lineage recorded with it.

    Attributes:
        version: The Lance version the ``published`` tag points to.
        lineage: String key/values recorded when it was published (for example the input
            versions it was built from); empty when unknown or inconsistent.
    """

    version: int
    lineage: dict[str, str]


def published(uri: str, storage_options: dict[str, str] | None = None) -> Published | None:
    """Return the published version of the dataset at ``uri``, or None.

    None means there is no dataset, or nothing in it ever passed its checks.
    """
    try:
        ds = open_dataset(uri, storage_options)
    except DatasetNotFoundError:
        return None
    tag = ds.tags.list().get(PUBLISHED_TAG)
    if tag is None:
        return None
    version = int(tag["version"])
    metadata = dict(tag.get("metadata") or {})
    if metadata.get("version") != str(version):  # metadata of an older publish: don't trust it
        metadata = {}
    metadata.pop("version", None)
    return Published(version, metadata)


def publish(
    uri: str,
    version: int,
    storage_options: dict[str, str] | None = None,
    lineage: dict[str, str] | None = None,
) -> None:
    """Point the ``published`` tag of ``uri`` at ``version`` and record its lineage.

    Args:
        uri: Dataset URI.
        version: The version whose checks passed.
        storage_options: Lance storage options.
        lineage: Extra string key/values to record with the tag.
    """
    ds = open_dataset(uri, storage_options)
    if PUBLISHED_TAG in ds.tags.list():
        ds.tags.update(PUBLISHED_TAG, version)
    else:
        ds.tags.create(PUBLISHED_TAG, version)
    ds.tags.replace_metadata(PUBLISHED_TAG, {**(lineage or {}), "version": str(version)})
    log.info("published %s version %d", uri, version)


def open_published(uri: str, storage_options: dict[str, str] | None = None) -> lance.LanceDataset:
    """Open the published version of ``uri``, the one every reader should see.

    Raises:
        DatasetNotFoundError: There is no dataset at ``uri``.
        NotPublishedError: The dataset exists but no version of it passed its checks.
    """
    ds = open_dataset(uri, storage_options)
    if PUBLISHED_TAG not in ds.tags.list():
        raise NotPublishedError(
            f"the Lance dataset at uri={uri!r} has no {PUBLISHED_TAG!r} version: no write of it "
            f"has passed its blocking checks yet (latest unchecked version: {ds.version}); "
            "fix the failing check and re-materialize, or pass an explicit version"
        )
    return open_dataset(uri, storage_options, PUBLISHED_TAG)


def open_version(
    uri: str, storage_options: dict[str, str] | None, version: int | str | None
) -> lance.LanceDataset:
    """Open ``version`` of ``uri``: the ``published`` tag (checked), a number, or None (latest).

    Raises:
        DatasetNotFoundError: There is no dataset at ``uri``.
        NotPublishedError: ``version`` is the published tag and nothing passed its checks.
    """
    if version == PUBLISHED_TAG:
        return open_published(uri, storage_options)
    return open_dataset(uri, storage_options, version)


def discard_unpublished(uri: str, storage_options: dict[str, str] | None = None) -> int | None:
    """Make the published version the latest again, if a failed candidate sits on top of it.

    A write whose checks failed leaves its version as the latest one. The next incremental
    write must start from what was published, not from the rejected candidate, so this
    restores the published version as a new latest version (history is kept).

    Returns:
        The published version, or None if nothing is published (the caller then rebuilds).
    """
    pub = published(uri, storage_options)
    if pub is None:
        return None
    ds = open_dataset(uri, storage_options)
    if ds.version != pub.version:
        log.warning(
            "%s: latest version %d was never published (its checks failed); restoring the "
            "published version %d before writing",
            uri,
            ds.version,
            pub.version,
        )
        ds.checkout_version(pub.version).restore()
    return pub.version
