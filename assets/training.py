"""The training export asset: published ``multimodal_lance`` -> ``training_data.json``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.automation import FOLLOW_UPSTREAM, TRAINING_FRESHNESS
from assets.gate import check_results, check_specs
from assets.ingest import GROUP
from assets.metadata import markdown_table
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from vlm_lake.checks import blocking_failures, check_training_json
from vlm_lake.training.export_json import export_training_json, promote, staging_uri


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    freshness_policy=TRAINING_FRESHNESS,
    group_name=GROUP,
    deps=["multimodal_lance"],
    kinds={"json", "s3", "python"},
    check_specs=check_specs("training_json"),
    description='Alpaca-style training file: a JSON array of {"instruction": text, "input": '
    '[hex of each present image], "output": ""} from the published multimodal table. '
    "Written to LAKE_URI/training_data.json.candidate, checked, then moved over "
    "LAKE_URI/training_data.json.",
)
def training_json(
    context: AssetExecutionContext, lake: LakeResource, object_store: ObjectStoreResource
) -> MaterializeResult:
    """Export, check the candidate file, and promote it only if every check passes."""
    layout = lake.layout()
    store = object_store.store()
    candidate = staging_uri(layout.training_json)
    report = export_training_json(store, layout.multimodal, candidate)
    context.log.info(
        f"wrote {report.records} records with {report.images} images "
        f"({report.bytes_written / 1e6:.1f} MB) to {candidate}"
    )
    outcomes = check_training_json(store, candidate, report.records_expected)
    failures = blocking_failures(outcomes)
    if failures:
        context.log.error(
            f"{candidate} NOT published; failed checks: "
            + ", ".join(f"{o.name} (observed {o.observed})" for o in failures)
        )
    else:
        promote(store, candidate, layout.training_json)
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.records,
            "dagster/uri": layout.training_json if not failures else candidate,
            "published": MetadataValue.bool(not failures),
            "images": report.images,
            "bytes": report.bytes_written,
            "multimodal_version": report.source_version,
            "format": MetadataValue.text('[{"instruction": str, "input": [hex], "output": ""}]'),
            "preview": MetadataValue.md(markdown_table(report.preview)),
        },
        check_results=check_results("training_json", outcomes, context),
    )
