"""The curation table, ``curation.lance``: written from a policy, read by the exports.

Each version holds the exclusions of one policy run over the published ``image_lance`` and
``text_lance`` (:mod:`vlm_lake.curation.exclusions`); the policy and the row counts it
was applied to are in the schema's metadata, so a reader of any version knows what
produced it. The exports read the published version as :class:`Exclusions`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa

from vlm_lake.curation.exclusion_set import POLICY_KEY, TOTALS_KEY
from vlm_lake.curation.exclusions import ExclusionRows, image_exclusions, text_exclusions
from vlm_lake.curation.policy import CurationPolicy
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import CURATION_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurationRun:
    """One policy run: the candidate version written and what it found.

    Attributes:
        version: The curation table's new version (not yet published).
        policy: The policy applied.
        totals: ``images`` and ``documents`` the policy looked at, and the input versions.
        excluded_images: Distinct images excluded.
        excluded_documents: Distinct documents excluded.
        by_rule: Rows per ``kind/rule``.
    """

    version: int
    policy: CurationPolicy
    totals: dict[str, int]
    excluded_images: int
    excluded_documents: int
    by_rule: dict[str, int]


def _unchanged_version(
    uri: str, storage: dict[str, str] | None, table: pa.Table, schema: pa.Schema
) -> int | None:
    """The published version when it holds exactly these rows and metadata (no new commit)."""
    current = publish.published(uri, storage)
    if current is None:
        return None
    old = lance_io.open_dataset(uri, storage, current.version)
    if old.schema.metadata != schema.metadata or old.count_rows() != table.num_rows:
        return None
    return current.version if old.to_table().equals(table.cast(schema)) else None


def build_curation(
    images_uri: str,
    texts_uri: str,
    curation_uri: str,
    storage: dict[str, str] | None,
    policy: CurationPolicy,
    semantic_pairs: Callable[[], Iterable[tuple[str, str, float]]] | None = None,
) -> CurationRun:
    """Apply ``policy`` to the published images and texts; write the exclusions as a version.

    Args:
        images_uri: ``images.lance`` (its published version is read).
        texts_uri: ``texts.lance`` (its published version is read).
        curation_uri: ``curation.lance`` (overwritten by a new version).
        storage: Lance storage options of the lake.
        policy: The policy.
        semantic_pairs: Returns the ``(image_id, image_id, cosine)`` pairs of feature
            cosine >= the policy's ``semantic_min_cosine`` (called only when the policy
            drops semantic duplicates).

    Returns:
        The run, with the candidate version to check and publish.
    """
    images = publish.open_published(images_uri, storage)
    texts = publish.open_published(texts_uri, storage)
    rows = ExclusionRows()
    pairs = semantic_pairs() if semantic_pairs and policy.duplicate_level("semantic") else ()
    image_exclusions(rows, images, policy, pairs)
    text_exclusions(rows, texts, policy)
    table = rows.table()
    totals = {
        "images": images.count_rows(),
        "documents": texts.count_rows(),
        "image_version": images.version,
        "text_version": texts.version,
    }
    schema = CURATION_SCHEMA.with_metadata(
        {POLICY_KEY: policy.to_json().encode(), TOTALS_KEY: json.dumps(totals).encode()}
    )
    version = _unchanged_version(curation_uri, storage, table, schema)
    if version is None:
        version = lance_io.write_batches(
            table.cast(schema).to_batches(),
            curation_uri,
            schema,
            storage,
            mode="overwrite",
            commit_message=f"curation policy {policy.to_json()}",
        ).version
    kinds = list(zip(table.column("kind").to_pylist(), table.column("id").to_pylist(), strict=True))
    distinct = Counter(kind for kind, _ in set(kinds))
    by_rule = Counter(
        f"{k}/{r}"
        for k, r in zip(
            table.column("kind").to_pylist(), table.column("rule").to_pylist(), strict=True
        )
    )
    log.info(
        "curation: %d of %d images and %d of %d documents excluded (%s)",
        distinct["image"],
        totals["images"],
        distinct["document"],
        totals["documents"],
        ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())) or "no rule set",
    )
    return CurationRun(
        version,
        policy,
        totals,
        distinct["image"],
        distinct["document"],
        dict(by_rule),
    )
