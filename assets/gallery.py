"""Thumbnails as asset metadata: what a user looks at in the Dagster UI.

The markdown comes from :mod:`vlm_lake.curation.gallery` (small JPEGs inlined as data
URIs); this module picks which images each asset shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue

from vlm_lake.checks import CheckOutcome
from vlm_lake.curation.gallery import PER_ROW, gallery

#: Duplicate clusters shown, largest first.
CLUSTERS_SHOWN = 3
#: Rules whose excluded images are shown, one row each.
RULES_SHOWN = 8


def _md(key: str, markdown: str | None) -> dict[str, Any]:
    return {} if markdown is None else {key: MetadataValue.md(markdown)}


def image_lance_gallery(
    ds: Any, written_ids: Sequence[str] | None, outcomes: Sequence[CheckOutcome]
) -> dict[str, Any]:
    """``new_images`` (a sample of those this run wrote) and ``largest_clusters``."""
    new = sorted(written_ids or [])[: 2 * PER_ROW]
    rows = [(f"new ({len(written_ids or [])})", [(i, i) for i in new[:PER_ROW]])]
    rows += [("", [(i, i) for i in new[PER_ROW:]])]
    clusters = next(
        (o.details.get("clusters", []) for o in outcomes if o.name == "perceptual_duplicates"), []
    )
    groups = [
        (
            f"cluster of {c['size']}",
            [(c["kept"], f"kept: {c['kept']}")] + [(d, d) for d in c["duplicates"]],
        )
        for c in clusters[:CLUSTERS_SHOWN]
    ]
    return _md("new_images", gallery(ds, rows)) | _md("largest_clusters", gallery(ds, groups))


def excluded_gallery(ds: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``excluded_images``: per rule, thumbnails of images it excluded, with the value."""
    by_rule: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if row["kind"] == "image":
            items = by_rule.setdefault(row["rule"], [])
            if len(items) < PER_ROW:
                items.append((row["id"], f"{row['id']}: {row['value']:.3g}"))
    groups = [(rule, items) for rule, items in sorted(by_rule.items())[:RULES_SHOWN]]
    return _md("excluded_images", gallery(ds, groups))
