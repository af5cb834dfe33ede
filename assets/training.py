"""The training export asset: ``multimodal_lance`` -> ``training_data.json``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.ingest import GROUP
from assets.metadata import markdown_table
from assets.multimodal import multimodal_lance
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from vlm_lake.training_export import export_training_json


@asset(
    group_name=GROUP,
    deps=[multimodal_lance],
    kinds={"json", "s3", "python"},
    description='Alpaca-style training file: a JSON array of {"instruction": text, "input": '
    '[hex of each present image], "output": ""}, streamed to LAKE_URI/training_data.json.',
)
def training_json(
    context: AssetExecutionContext, lake: LakeResource, object_store: ObjectStoreResource
) -> MaterializeResult:
    """Stream the multimodal table into the training JSON (atomic replace)."""
    layout = lake.layout()
    report = export_training_json(object_store.store(), layout.multimodal, layout.training_json)
    context.log.info(
        f"wrote {report.records} records with {report.images} images "
        f"({report.bytes_written / 1e6:.1f} MB) to {report.uri}"
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": report.records,
            "dagster/uri": report.uri,
            "images": report.images,
            "bytes": report.bytes_written,
            "multimodal_version": report.source_version,
            "format": MetadataValue.text('[{"instruction": str, "input": [hex], "output": ""}]'),
            "preview": MetadataValue.md(markdown_table(report.preview)),
        }
    )
