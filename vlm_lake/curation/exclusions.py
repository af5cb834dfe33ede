"""What a curation policy excludes: one row per excluded image or document and rule.

Each row says which rule excluded it (the policy field), the measured value and the
threshold, and for duplicates which image or document its cluster keeps: nothing leaves the
training data without a reason. Signal rules are applied first; duplicate clusters then
keep a member that passes them (the largest resolution, then the first ingested, for
images; the first ingested for documents). A duplicate's value is its distance to the
nearest other member of its cluster (0 for identical bytes, phash bits, the feature cosine,
the estimated Jaccard similarity), so it meets the threshold it is shown with (a text
cluster of more than :data:`PAIRWISE_CLUSTER_LIMIT` documents shows the share with its
kept document instead, which a long chain of near-duplicates can put under it).

Signal rules are Lance filtered scans (memory: the exclusions); the duplicate steps run on
the driver over Arrow columns (about 250 bytes per image, 1 KB per document); see
docs/curation.md ("Scale").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.curation.clusters import (
    cluster_images,
    cluster_texts,
    perceptual_links,
)
from vlm_lake.curation.policy import CurationPolicy, SignalRule
from vlm_lake.tables.contracts import CURATION_SCHEMA

log = logging.getLogger(__name__)

#: Clusters larger than this measure a member's distance to the kept one only.
PAIRWISE_CLUSTER_LIMIT = 512


@dataclass
class ExclusionRows:
    """Rows of the curation table being gathered (see :data:`CURATION_SCHEMA`)."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in CURATION_SCHEMA.names}
    )

    def add(
        self,
        kind: str,
        ids: Iterable[str],
        rule: str,
        values: Iterable[float],
        threshold: float,
        details: Iterable[str | None] | None = None,
    ) -> None:
        """Add one row per id, all excluded by ``rule``."""
        ids, values = list(ids), [float(v) for v in values]
        self.columns["kind"] += [kind] * len(ids)
        self.columns["id"] += ids
        self.columns["rule"] += [rule] * len(ids)
        self.columns["value"] += values
        self.columns["threshold"] += [float(threshold)] * len(ids)
        self.columns["detail"] += list(details) if details is not None else [None] * len(ids)

    def table(self) -> pa.Table:
        """The rows as a table of the curation schema."""
        return pa.table(self.columns, schema=CURATION_SCHEMA)


def apply_signal_rules(
    rows: ExclusionRows, kind: str, ds: Any, key: str, rules: list[SignalRule]
) -> set[str]:
    """Add the rows each signal rule excludes; return the ids any rule excluded.

    One filtered scan per rule (Lance streams the column and returns only the matches):
    memory grows with the exclusions, not the table. A row without signals (null) never
    matches.
    """
    excluded: set[str] = set()
    for rule in rules:
        hits = ds.to_table(columns=[key, rule.column], filter=rule.lance_filter)
        ids = hits.column(key).to_pylist()
        values = hits.column(rule.column).to_numpy(zero_copy_only=False).astype(np.float64)
        if rule.name == "max_aspect_ratio":  # the longer side over the shorter, either way
            values = np.maximum(values, 1.0 / values)
        rows.add(kind, ids, rule.name, values, rule.threshold)
        excluded.update(ids)
    return excluded


# -- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLinks:
    """Pairs of images the clusters join, with each image's closest distance by level.

    Attributes:
        a, b: Pair ends (row indices).
        phash_bits: Each image's least phash distance to another image (64: none close).
        cosine: Each image's highest feature cosine with another image (0: none close).
    """

    a: np.ndarray
    b: np.ndarray
    phash_bits: np.ndarray
    cosine: np.ndarray


def image_links(
    table: pa.Table, policy: CurationPolicy, semantic_pairs: Iterable[tuple[str, str, float]]
) -> ImageLinks:
    """The perceptual and semantic pairs of ``table``'s images that ``policy`` drops."""
    n = table.num_rows
    a_parts, b_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    bits = np.full(n, 64, np.int64)
    if policy.duplicate_level("perceptual"):
        phash = table.column("phash").combine_chunks()
        idx = np.flatnonzero(pc.is_valid(phash).to_numpy(zero_copy_only=False))
        # nulls dropped in Arrow: a column with nulls would go through float64 and lose bits
        values = pc.drop_null(phash).to_numpy().astype(np.int64).view(np.uint64)
        a, b, bits[idx] = perceptual_links(values, policy.phash_max_bits)
        a_parts.append(idx[a])
        b_parts.append(idx[b])
    cosine = np.zeros(n)
    if policy.duplicate_level("semantic"):
        pairs = list(semantic_pairs)
        ids = table.column("image_id").combine_chunks()
        ends = [
            pc.index_in(pa.array([p[k] for p in pairs], pa.string()), value_set=ids) for k in (0, 1)
        ]
        known = pc.fill_null(pc.and_(pc.is_valid(ends[0]), pc.is_valid(ends[1])), False)
        known = known.to_numpy(zero_copy_only=False)
        if known.any():
            sa, sb = (e.to_numpy(zero_copy_only=False)[known].astype(np.int64) for e in ends)
            sc = np.array([p[2] for p in pairs], dtype=np.float64)[known]
            np.maximum.at(cosine, sa, sc)
            np.maximum.at(cosine, sb, sc)
            a_parts.append(sa.astype(np.int64))
            b_parts.append(sb.astype(np.int64))
    return ImageLinks(np.concatenate(a_parts), np.concatenate(b_parts), bits, cosine)


def image_exclusions(
    rows: ExclusionRows,
    ds: Any,
    policy: CurationPolicy,
    semantic_pairs: Iterable[tuple[str, str, float]] = (),
) -> None:
    """Add the images ``policy`` excludes from ``ds`` (a version of ``image_lance``).

    Args:
        rows: Where the exclusions go.
        ds: The images, pinned to a version.
        policy: The policy.
        semantic_pairs: ``(image_id, image_id, cosine)`` pairs at or above the policy's
            ``semantic_min_cosine`` (used when it drops semantic duplicates).
    """
    barred = apply_signal_rules(rows, "image", ds, "image_id", policy.image_rules())
    if not policy.duplicate_level("exact"):
        return
    columns = ["image_id", "sha256", "width", "height"]
    if policy.duplicate_level("perceptual"):
        columns.append("phash")
    table = ds.to_table(columns=columns)
    ids = table.column("image_id").combine_chunks()
    passed = ~_codes_in(ids, barred)
    links = image_links(table, policy, semantic_pairs)
    # sha256 as integer codes: no Python string per image
    sha = pc.dictionary_encode(table.column("sha256").combine_chunks()).indices.to_numpy()
    pixels = pc.multiply(
        table.column("width").cast(pa.int64()), table.column("height").cast(pa.int64())
    ).to_numpy(zero_copy_only=False)
    del table
    clusters = cluster_images(
        np.zeros(len(sha), np.int64),
        sha,
        pixels,
        threshold=None,
        eligible=passed,
        links=(links.a, links.b),
    )
    dup = clusters.duplicates()
    exact = np.bincount(sha)[sha[dup]] > 1
    perceptual = ~exact & (links.phash_bits[dup] <= policy.phash_max_bits)
    semantic = ~exact & ~perceptual
    dup_ids = ids.take(pa.array(dup)).to_pylist()
    kept_ids = ids.take(pa.array(clusters.cluster[dup])).to_pylist()
    details = np.array(
        [
            f"duplicate of {k} (cluster of {n})"
            for k, n in zip(kept_ids, clusters.size[dup].tolist(), strict=True)
        ],
        dtype=object,
    )
    dup_ids = np.asarray(dup_ids, dtype=object)
    for rule, mask, values, threshold in (
        ("exact_duplicate", exact, np.zeros(len(dup)), 0.0),
        ("perceptual_duplicate", perceptual, links.phash_bits[dup], policy.phash_max_bits),
        ("semantic_duplicate", semantic, links.cosine[dup], policy.semantic_min_cosine),
    ):
        rows.add("image", dup_ids[mask], rule, values[mask], threshold, details[mask])


def _codes_in(values: pa.Array, members: set[str]) -> np.ndarray:
    """Whether each of ``values`` is in ``members`` (vectorized: no Python loop per row)."""
    if not members:
        return np.zeros(len(values), bool)
    hit = pc.is_in(values, value_set=pa.array(sorted(members), pa.string()))
    return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)


# -- documents -----------------------------------------------------------------------------


def _closest_share(signatures: np.ndarray, group: np.ndarray, kept: int) -> np.ndarray:
    """Each member's highest share of equal MinHash values with another member."""
    if len(group) > PAIRWISE_CLUSTER_LIMIT:
        return (signatures[group] == signatures[kept]).mean(axis=1)
    sig = signatures[group]
    share = (sig[:, None, :] == sig[None, :, :]).mean(axis=2)
    np.fill_diagonal(share, -1.0)
    return share.max(axis=1)


def text_exclusions(rows: ExclusionRows, ds: Any, policy: CurationPolicy) -> None:
    """Add the documents ``policy`` excludes from ``ds`` (a version of ``text_lance``)."""
    barred = apply_signal_rules(rows, "document", ds, "docid", policy.text_rules())
    if not policy.drop_near_duplicate_texts:
        return
    table = ds.to_table(columns=["docid", "minhash"])
    table = table.filter(pc.is_valid(table.column("minhash")))  # rows written without signals
    docids = table.column("docid").combine_chunks()
    passed = ~_codes_in(docids, barred)
    minhash = table.column("minhash").combine_chunks()
    signatures = minhash.flatten().to_numpy().reshape(len(minhash), minhash.type.list_size)
    clusters = cluster_texts(signatures, threshold=policy.text_min_jaccard)
    clusters = clusters.keep_first_eligible(passed)
    for group in clusters.groups():  # Python strings only for the clusters' members
        kept = int(clusters.cluster[group[0]])
        share = _closest_share(signatures, group, kept)
        others = group != kept
        names = docids.take(pa.array(group, pa.int64())).to_pylist()
        kept_name = names[int(np.flatnonzero(~others)[0])]
        rows.add(
            "document",
            [n for n, o in zip(names, others, strict=True) if o],
            "near_duplicate_text",
            share[others],
            policy.text_min_jaccard,
            [f"near-duplicate of {kept_name} (cluster of {len(group)})"] * int(others.sum()),
        )
