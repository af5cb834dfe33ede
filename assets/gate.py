"""Write, check, publish: turn core check outcomes into Dagster check results.

Every Lance asset runs its checks *inside* its own step, against the candidate version it
just wrote, and publishes that version only if no blocking check failed. Each check is also
declared as a blocking (or warning) ``AssetCheckSpec``, so the UI shows the evidence and a
failed blocking check stops the downstream assets too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MetadataValue,
)

from vlm_lake.checks import CheckOutcome, blocking_failures
from vlm_lake.tables import publish

#: Checks of each asset: (name, blocking, description). Names match vlm_lake.checks.all_checks.
CHECKS: dict[str, list[tuple[str, bool, str]]] = {
    "image_lance": [
        ("image_id_unique", True, "No image_id appears twice."),
        ("images_decode", True, "Every image written by the run decodes with Pillow."),
        ("duplicate_images", False, "Byte-identical images under different ids (sha256)."),
    ],
    "text_lance": [
        ("docid_unique", True, "No docid appears twice."),
        ("text_not_empty", True, "Every document has a non-blank text."),
        ("schema_as_contracted", True, "docid, text, image_id1..K, source_uri, record_sha256."),
    ],
    "multimodal_lance": [
        ("one_row_per_document", True, "Exactly one row per document of text_lance."),
        ("dangling_references", False, "Referenced image ids that are not in image_lance."),
    ],
    "image_features": [
        ("one_row_per_image", True, "One row per image of image_lance, with its current sha256."),
        ("features_finite", True, "No NaN or infinite value in any feature vector."),
        ("single_model", True, "Every row computed by this run's model and weights."),
        (
            "near_duplicate_images",
            False,
            "Image pairs whose features have cosine similarity >= 0.98.",
        ),
    ],
    "training_json": [
        ("parses", True, "The file is one JSON array."),
        ("record_count_matches", True, "One record per document of multimodal_lance."),
        ("images_decode", True, "Every hex string decodes to an image."),
    ],
}


def check_specs(asset: str) -> list[AssetCheckSpec]:
    """The ``AssetCheckSpec`` s of one asset (blocking for the ones that guard training)."""
    return [
        AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)
        for name, blocking, description in CHECKS[asset]
    ]


def check_results(asset: str, outcomes: Sequence[CheckOutcome]) -> list[AssetCheckResult]:
    """Convert core outcomes to results carrying the observed value and the expectation."""
    declared = {name for name, _, _ in CHECKS[asset]}
    produced = {o.name for o in outcomes}
    if produced != declared:
        raise ValueError(
            f"checks of {asset!r}: produced {sorted(produced)}, declared {sorted(declared)}"
        )
    return [
        AssetCheckResult(
            asset_key=AssetKey(asset),
            check_name=o.name,
            passed=o.passed,
            severity=AssetCheckSeverity.ERROR if o.blocking else AssetCheckSeverity.WARN,
            metadata={
                "observed": _metadata_value(o.observed),
                "expected": MetadataValue.text(o.expected),
                **{k: _metadata_value(v) for k, v in o.details.items()},
            },
        )
        for o in outcomes
    ]


def gate_and_publish(
    context: AssetExecutionContext,
    asset: str,
    uri: str,
    storage: dict[str, str],
    version: int,
    outcomes: Sequence[CheckOutcome],
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Publish ``version`` if no blocking check failed; return the publication metadata.

    Args:
        context: The step's context, for the log.
        asset: Asset name, for the log.
        uri: Dataset URI.
        storage: Lance storage options.
        version: The candidate version the checks ran on.
        outcomes: The check outcomes.
        lineage: Extra key/values to record with the published tag.

    Returns:
        ``published`` and ``lance/published_version`` metadata entries.
    """
    failures = blocking_failures(outcomes)
    if failures:
        context.log.error(
            f"{asset}: version {version} NOT published; failed blocking checks: "
            + ", ".join(
                f"{o.name} (observed {o.observed}; expected {o.expected})" for o in failures
            )
        )
    else:
        publish.publish(uri, version, storage, lineage)
    current = publish.published(uri, storage)
    return publication_metadata(not failures, current.version if current else None)


def publication_metadata(published: bool, published_version: int | None) -> dict[str, Any]:
    """Metadata saying whether this run's version was published and which one readers see."""
    return {
        "published": MetadataValue.bool(published),
        "lance/published_version": MetadataValue.int(published_version)
        if published_version is not None
        else MetadataValue.text("none"),
    }


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bool):
        return MetadataValue.bool(value)
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, str):
        return MetadataValue.text(value)
    return MetadataValue.json(json.loads(json.dumps(value, default=str)))
