"""The training export asset: published ``multimodal_lance`` -> ``training_data.json``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from collections.abc import Callable
from typing import Any

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.automation import FOLLOW_UPSTREAM, TRAINING_FRESHNESS
from assets.gate import check_results, check_specs
from assets.ingest import GROUP
from assets.metadata import markdown_table
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks import CheckOutcome, blocking_failures
from vlm_lake.checks.curation import excluded_share
from vlm_lake.checks.training_json import EXCLUDED_SHARE
from vlm_lake.checks.training_shards import check_training_export
from vlm_lake.curation.exclusion_set import load_exclusions
from vlm_lake.spark.engine import check_engine
from vlm_lake.training.export_json import preview_records
from vlm_lake.training.manifest import ExportManifest, manifest_uri
from vlm_lake.training.sharded_export import export_sharded, publish_export
from vlm_lake.training.shards import SHARD_TARGET_BYTES


class ExportConfig(Config):
    """Run configuration of the training export (set it in the launchpad)."""

    engine: str = Field(
        default="auto",
        description="Where shards are written and checked: 'local' (threads in the run's "
        "process), 'spark' (one Spark task per shard) or 'auto' (Spark from 8 shards to "
        "write).",
    )
    check_all_shards: bool = Field(
        default=False,
        description="Read every shard again in the checks. Off: only the shards this run "
        "wrote are read (parsed, images decoded, sha256); reused ones, checked when they "
        "were written, are confirmed by their size.",
    )
    shard_target_bytes: int = Field(
        default=SHARD_TARGET_BYTES, description="About how many bytes of JSON one shard holds."
    )


def exclusion_metadata(manifest: ExportManifest) -> dict[str, Any]:
    """What the curation left out of an export, and which curation version it was."""
    version = manifest.curation.get("curation_version")
    return {
        "excluded_documents": manifest.excluded_documents,
        "excluded_images": manifest.excluded_images,
        "curation_version": MetadataValue.text("none published") if version is None else version,
    }


def publish_if_checked(
    context: AssetExecutionContext,
    what: str,
    outcomes: list[CheckOutcome],
    publish: Callable[[], object],
) -> bool:
    """Publish an export whose blocking checks all passed; else log which failed."""
    failures = blocking_failures(outcomes)
    if failures:
        context.log.error(
            f"{what} NOT published; failed checks: "
            + ", ".join(f"{o.name} (observed {o.observed})" for o in failures)
        )
        return False
    publish()
    return True


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    freshness_policy=TRAINING_FRESHNESS,
    group_name=GROUP,
    deps=["multimodal_lance", "curation"],
    kinds={"json", "s3", "spark"},
    check_specs=check_specs("training_json"),
    description='Alpaca-style training file: a JSON array of {"instruction": text, "input": '
    '[hex of each present image], "output": ""} from the published multimodal table. Written '
    "as shards (one or more per multimodal fragment; only changed ones are rewritten) under "
    "LAKE_URI/training_data.shards/, assembled into LAKE_URI/training_data.json.candidate, "
    "checked shard by shard, then moved over LAKE_URI/training_data.json with its manifest "
    "LAKE_URI/training_data.manifest.json. Leaves out what the published curation excludes.",
)
def training_json(
    context: AssetExecutionContext,
    config: ExportConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> MaterializeResult:
    """Export the shards, check them, and promote the file only if every check passes."""
    layout = lake.layout()
    store = object_store.store()
    check_engine(config.engine)

    def session() -> Any:  # started only when shards go to Spark
        return spark.spark_session

    exclusions = load_exclusions(layout.curation, store.storage_options(layout.curation))
    run = export_sharded(
        store,
        layout.multimodal,
        layout.training_json,
        spark=session,
        engine=config.engine,
        target_bytes=config.shard_target_bytes,
        exclusions=exclusions,
    )
    manifest = run.manifest
    context.log.info(
        f"wrote {manifest.records} records with {manifest.images} images "
        f"({manifest.bytes / 1e6:.1f} MB) to {run.candidate}: {run.written} shards written "
        f"({run.engine}), {run.reused} reused"
    )
    outcomes = check_training_export(
        store,
        run.candidate,
        manifest,
        manifest.records,
        spark=session if run.engine == "spark" else None,
        read=None if config.check_all_shards else run.written_names,
    ) + [excluded_share(EXCLUDED_SHARE, manifest, exclusions.max_excluded_share)]
    published = publish_if_checked(
        context,
        run.candidate,
        outcomes,
        lambda: publish_export(store, layout.training_json, manifest),
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": manifest.records,
            "dagster/uri": layout.training_json if published else run.candidate,
            "published": MetadataValue.bool(published),
            "images": manifest.images,
            "bytes": manifest.bytes,
            "multimodal_version": manifest.source_version,
            "shards": len(manifest.shards),
            "shards_written": run.written,
            "shards_reused": run.reused,
            **exclusion_metadata(manifest),
            "engine": run.engine,
            "bytes_copied_server_side": run.assembly.copied_bytes,
            "manifest": manifest_uri(layout.training_json),
            "format": MetadataValue.text('[{"instruction": str, "input": [hex], "output": ""}]'),
            "preview": MetadataValue.md(
                markdown_table(preview_records(store, layout.multimodal, manifest.source_version))
            ),
        },
        check_results=check_results("training_json", outcomes, context),
    )
