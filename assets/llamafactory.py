"""The LLaMA-Factory export asset: published ``multimodal_lance`` -> ``LAKE_URI/llamafactory/``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from typing import Any

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.automation import FOLLOW_UPSTREAM
from assets.gate import check_results, check_specs
from assets.ingest import GROUP
from assets.training import ExportConfig, exclusion_metadata, publish_if_checked
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks.curation import excluded_share
from vlm_lake.checks.llamafactory import EXCLUDED_SHARE, check_llamafactory
from vlm_lake.curation.exclusion_set import load_exclusions
from vlm_lake.spark.engine import check_engine
from vlm_lake.training.llamafactory import (
    DATASET_NAME,
    data_uri,
    export_llamafactory,
    publish_llamafactory,
)


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    group_name=GROUP,
    deps=["multimodal_lance", "curation"],
    kinds={"json", "s3", "spark"},
    check_specs=check_specs("training_llamafactory"),
    description="A LLaMA-Factory dataset folder, LAKE_URI/llamafactory/: images/<sha256>.<ext> "
    "(each image once, bytes as uploaded), vlm_lake.jsonl (multimodal sharegpt records: one "
    "<image> token per image, paths relative to the folder) and dataset_info.json (dataset "
    "'vlm_lake'). Use `dataset: vlm_lake` and `dataset_dir: <folder>`. Incremental: only "
    "changed fragments' records are rewritten, no image twice. Leaves out what the published "
    "curation excludes.",
)
def training_llamafactory(
    context: AssetExecutionContext,
    config: ExportConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> MaterializeResult:
    """Export the folder, check the records this run wrote, publish if every check passes."""
    folder = lake.layout().llamafactory
    store = object_store.store()
    check_engine(config.engine)

    def session() -> Any:  # started only when shards go to Spark
        return spark.spark_session

    curation_uri = lake.layout().curation
    exclusions = load_exclusions(curation_uri, store.storage_options(curation_uri))
    run = export_llamafactory(
        store,
        lake.layout().multimodal,
        folder,
        spark=session,
        engine=config.engine,
        target_bytes=config.shard_target_bytes,
        exclusions=exclusions,
    )
    manifest = run.manifest
    context.log.info(
        f"wrote {manifest.records} records naming {manifest.images} images to {folder}: "
        f"{run.written} shards written ({run.engine}), {run.reused} reused"
    )
    read = None if config.check_all_shards else run.written_names
    outcomes = check_llamafactory(store, folder, manifest, manifest.records, read=read)
    outcomes.append(excluded_share(EXCLUDED_SHARE, manifest, exclusions.max_excluded_share))
    published = publish_if_checked(
        context, folder, outcomes, lambda: publish_llamafactory(store, folder, manifest)
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": manifest.records,
            "dagster/uri": data_uri(folder),
            "published": MetadataValue.bool(published),
            "dataset": MetadataValue.text(f"dataset: {DATASET_NAME}, dataset_dir: {folder}"),
            "images_referenced": manifest.images,
            "multimodal_version": manifest.source_version,
            "shards_written": run.written,
            "shards_reused": run.reused,
            **exclusion_metadata(manifest),
            "engine": run.engine,
        },
        check_results=check_results("training_llamafactory", outcomes, context),
    )
