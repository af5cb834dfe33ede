"""The join asset: published ``text_lance`` + ``image_lance`` -> ``multimodal_lance``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from assets.automation import FOLLOW_UPSTREAM
from assets.gate import check_specs, checked_lance_result
from assets.ingest import GROUP
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks import check_multimodal
from vlm_lake.multimodal.join import build_multimodal
from vlm_lake.tables import lance_io


class JoinConfig(Config):
    """Run configuration of the join."""

    full_rebuild: bool = Field(
        default=False,
        description="Join every document again instead of only those whose text or images "
        "changed since the published version.",
    )


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    group_name=GROUP,
    deps=["text_lance", "image_lance"],
    kinds={"lance", "spark", "s3"},
    check_specs=check_specs("multimodal_lance"),
    description="Each document with the bytes of image_id1..K as image1..imageK (left join: "
    "null where an id has no image), from the published texts and images. Spark joins ids "
    "only; bytes are fetched once per batch straight from images.lance. Incremental: only "
    "documents whose text or images changed are redone. LAKE_URI/multimodal.lance; readers "
    "see the 'published' tag.",
)
def multimodal_lance(
    context: AssetExecutionContext,
    config: JoinConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> MaterializeResult:
    """Join documents to images by id on Spark, check the result, publish it."""
    layout = lake.layout()
    out_storage = object_store.storage_options(layout.multimodal)
    text_storage = object_store.storage_options(layout.texts)
    image_storage = object_store.storage_options(layout.images)
    report = build_multimodal(
        lambda: spark.spark_session,
        text_uri=layout.texts,
        image_uri=layout.images,
        out_uri=layout.multimodal,
        text_storage=text_storage,
        image_storage=image_storage,
        out_storage=out_storage,
        full_rebuild=config.full_rebuild,
    )
    context.log.info(
        f"joined {report.rows_written} documents "
        f"({'full rebuild' if report.full_rebuild else 'incremental'}), "
        f"{report.rows_deleted} removed: {report.images_attached} images attached, "
        f"{report.dangling_references} dangling references; version {report.summary.version} "
        f"has {report.summary.num_rows} rows"
    )
    version = report.summary.version
    outcomes = check_multimodal(
        lance_io.open_dataset(layout.multimodal, out_storage, version),
        lance_io.open_dataset(layout.texts, text_storage, report.text_version),
        lance_io.open_dataset(layout.images, image_storage, report.image_version),
    )
    return checked_lance_result(
        context,
        "multimodal_lance",
        report.summary,
        out_storage,
        outcomes,
        lineage=report.lineage(),
        committed=report.committed,
        full_rebuild=report.full_rebuild,
        image_slots=report.num_slots,
        rows_written=report.rows_written,
        rows_deleted=report.rows_deleted,
        images_attached=report.images_attached,
        dangling_references=report.dangling_references,
        images_version=report.image_version,
        texts_version=report.text_version,
    )
