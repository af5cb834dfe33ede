"""Which documents an incremental join must redo, from two pairs of input versions.

A document is affected when its own record changed (``record_sha256`` in ``text_lance``)
or when an image it references was added, removed or changed (``sha256`` in
``image_lance``). Only ids and hashes are read, never image bytes.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.tables import lance_io
from vlm_lake.tables.contracts import image_id_columns

log = logging.getLogger(__name__)


def _key_hashes(
    uri: str, storage: dict[str, str] | None, version: int, key: str, value: str
) -> dict[str, str] | None:
    """``key -> value`` for one version, or None if that version lacks the columns."""
    ds = lance_io.open_dataset(uri, storage, version)
    if key not in ds.schema.names or value not in ds.schema.names:
        return None
    return lance_io.column_map(ds, key, value)


def _changed_keys(old: dict[str, str], new: dict[str, str]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def affected_documents(
    *,
    text_uri: str,
    image_uri: str,
    text_storage: dict[str, str] | None,
    image_storage: dict[str, str] | None,
    old_text_version: int,
    new_text_version: int,
    old_image_version: int,
    new_image_version: int,
) -> tuple[set[str], set[str]] | None:
    """Which documents of the join must be redone between two pairs of input versions.

    A document is affected when its own record changed (``record_sha256``) or when an image
    it references was added, removed or changed (``sha256``).

    Returns:
        ``(affected, removed)`` docids, or None when the old versions cannot be compared
        (a schema without the hash columns, or a version already cleaned up).
    """
    try:
        old_docs = _key_hashes(text_uri, text_storage, old_text_version, "docid", "record_sha256")
        new_docs = _key_hashes(text_uri, text_storage, new_text_version, "docid", "record_sha256")
        old_imgs = _key_hashes(image_uri, image_storage, old_image_version, "image_id", "sha256")
        new_imgs = _key_hashes(image_uri, image_storage, new_image_version, "image_id", "sha256")
    except (DatasetNotFoundError, OSError, ValueError) as exc:
        log.warning("cannot compare input versions (%s); rebuilding the join", exc)
        return None
    if None in (old_docs, new_docs, old_imgs, new_imgs):
        return None
    assert old_docs is not None and new_docs is not None  # for type checkers
    assert old_imgs is not None and new_imgs is not None
    removed = set(old_docs) - set(new_docs)
    affected = _changed_keys(old_docs, new_docs) - removed
    changed_images = _changed_keys(old_imgs, new_imgs)
    if changed_images:
        text_ds = lance_io.open_dataset(text_uri, text_storage, new_text_version)
        slots = image_id_columns(text_ds.schema)
        table = text_ds.to_table(columns=["docid", *slots])
        value_set = pa.array(sorted(changed_images), pa.string())
        mask = None
        for slot in slots:
            hit = pc.fill_null(pc.is_in(table.column(slot), value_set=value_set), False)
            mask = hit if mask is None else pc.or_(mask, hit)
        if mask is not None:
            affected |= set(table.column("docid").filter(mask).to_pylist())
    return affected, removed
