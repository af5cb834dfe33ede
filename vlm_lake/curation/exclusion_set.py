"""The published curation as the exports see it: sets of excluded ids, and the policy.

A reader of ``curation.lance`` (the writer is :mod:`vlm_lake.curation.table`): the
training exports load :class:`Exclusions` once per run and hand them to the shard tasks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.curation.policy import CurationPolicy
from vlm_lake.tables import lance_io, publish

log = logging.getLogger(__name__)

#: Schema metadata keys of ``curation.lance``: the policy (JSON) and the totals it saw.
POLICY_KEY = b"vlm_lake.policy"
TOTALS_KEY = b"vlm_lake.totals"


def read_policy(ds: Any) -> tuple[CurationPolicy, dict[str, int]]:
    """The policy and totals recorded in a version of ``curation.lance``."""
    metadata = ds.schema.metadata or {}
    policy = CurationPolicy.from_dict(json.loads(metadata.get(POLICY_KEY, b"{}")))
    return policy, json.loads(metadata.get(TOTALS_KEY, b"{}"))


@dataclass(frozen=True)
class Exclusions:
    """What the exports leave out: the published curation version, as id sets.

    Attributes:
        images: Excluded image ids (left out of every record that names them).
        documents: Excluded docids (no record at all).
        digest: Digest of both sets ("" when both are empty), recorded in the export
            manifests (each shard's name holds the digest of its own rows' exclusions).
        max_excluded_share: The policy's limit, for the exports' blocking check.
        version: The curation version (None: no curation table published).
    """

    images: frozenset[str] = frozenset()
    documents: frozenset[str] = frozenset()
    digest: str = ""
    max_excluded_share: float = CurationPolicy().max_excluded_share
    version: int | None = None

    def __bool__(self) -> bool:
        return bool(self.images or self.documents)

    def lineage(self) -> dict[str, Any]:
        """What the export manifests record of the curation they applied."""
        return {
            "curation_version": self.version,
            "excluded_images": len(self.images),
            "excluded_documents": len(self.documents),
            "digest": self.digest,
        }


def load_exclusions(
    curation_uri: str, storage: dict[str, str] | None, version: int | str = "published"
) -> Exclusions:
    """The exclusions of a curation version (default: the published one; none if absent).

    Reads the ``kind`` and ``id`` columns: memory grows with the exclusions, not the lake.
    """
    if version == publish.PUBLISHED_TAG:
        current = publish.published(curation_uri, storage)
        if current is None:
            log.info("no published curation at %s: nothing is excluded", curation_uri)
            return Exclusions()
        version = current.version
    ds = lance_io.open_dataset(curation_uri, storage, version)
    table = ds.to_table(columns=["kind", "id"])
    pairs = set(zip(table.column("kind").to_pylist(), table.column("id").to_pylist(), strict=True))
    images = frozenset(i for k, i in pairs if k == "image")
    documents = frozenset(i for k, i in pairs if k == "document")
    digest = ""
    if pairs:
        digest = hashlib.sha256(
            "\n".join(f"{k}\0{i}" for k, i in sorted(pairs)).encode()
        ).hexdigest()
    policy, _ = read_policy(ds)
    return Exclusions(images, documents, digest[:32], policy.max_excluded_share, ds.version)


#: Nothing excluded (no curation published, or the default policy).
NO_EXCLUSIONS = Exclusions()


def kept_rows(ds: Any, exclusions: Exclusions) -> np.ndarray | None:
    """Positions of the rows of ``ds`` whose ``docid`` is not excluded (None: all are kept).

    One ordered scan of the ``docid`` column; 8 bytes per kept row.
    """
    if not exclusions.documents:
        return None
    excluded = pa.array(sorted(exclusions.documents), pa.string())
    parts, offset = [], 0
    for batch in ds.to_batches(columns=["docid"], batch_size=64 * 1024, scan_in_order=True):
        dropped = pc.fill_null(pc.is_in(batch.column("docid"), value_set=excluded), False)
        parts.append(np.flatnonzero(~dropped.to_numpy(zero_copy_only=False)) + offset)
        offset += batch.num_rows
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
