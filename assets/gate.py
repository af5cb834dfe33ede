"""Write, check, publish: the skeleton every Lance asset's step follows.

Every Lance asset runs its checks *inside* its own step, against the candidate version it
just wrote, and publishes that version only if no blocking check failed
(:func:`checked_lance_result`). Each check is also declared to Dagster as a blocking (or
warning) ``AssetCheckSpec``, built from the check's one declaration in
:data:`vlm_lake.checks.SPECS`, so the UI shows the evidence and a failed blocking check
stops the downstream assets too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
)

from assets.metadata import lance_result
from vlm_lake.checks import SPECS, CheckOutcome, blocking_failures
from vlm_lake.tables import publish
from vlm_lake.tables.lance_io import DatasetSummary


def check_specs(asset: str) -> list[AssetCheckSpec]:
    """The ``AssetCheckSpec`` s of one asset, from the checks' own declarations."""
    return [
        AssetCheckSpec(spec.name, asset=asset, blocking=spec.blocking, description=spec.description)
        for spec in SPECS[asset]
    ]


def check_results(
    asset: str, outcomes: Sequence[CheckOutcome], context: AssetExecutionContext | None = None
) -> list[AssetCheckResult]:
    """Core outcomes as Dagster results with the observed value and the expectation.

    With ``context``, only the checks of the run's selection are returned (the gate uses
    every outcome either way).

    Raises:
        ValueError: The outcomes are not exactly the checks declared for ``asset``.
    """
    declared = {spec.name for spec in SPECS[asset]}
    produced = {o.name for o in outcomes}
    if produced != declared:
        raise ValueError(
            f"checks of {asset!r}: produced {sorted(produced)}, declared {sorted(declared)}"
        )
    selected = None if context is None else context.selected_asset_check_keys
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
        if selected is None or AssetCheckKey(AssetKey(asset), o.name) in selected
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


def checked_lance_result(
    context: AssetExecutionContext,
    asset: str,
    summary: DatasetSummary,
    storage: dict[str, str],
    outcomes: Sequence[CheckOutcome],
    *,
    lineage: dict[str, str] | None = None,
    **metadata: Any,
) -> MaterializeResult:
    """The last steps every Lance asset shares: gate and publish, then report.

    Args:
        context: The step's context.
        asset: The asset (also the result's key, for multi-assets).
        summary: The candidate version the run wrote (or found).
        storage: Lance storage options.
        outcomes: The checks run on that version.
        lineage: What to record with the published tag.
        **metadata: The asset's own metadata entries.

    Returns:
        The result with the Lance metadata, the publication, the selected check results and
        ``metadata``.
    """
    published = gate_and_publish(
        context, asset, summary.uri, storage, summary.version, outcomes, lineage
    )
    return lance_result(
        summary,
        storage,
        asset_key=asset,
        check_results=check_results(asset, outcomes, context),
        **published,
        **metadata,
    )


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
