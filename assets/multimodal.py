"""The join asset: ``text_lance`` + ``image_lance`` -> ``multimodal_lance`` on Spark."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.ingest import GROUP, image_lance, text_lance
from assets.metadata import lance_result
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.multimodal import build_multimodal


@asset(
    group_name=GROUP,
    deps=[text_lance, image_lance],
    kinds={"lance", "spark", "s3"},
    description="Each document with the bytes of image_id1..K as image1..imageK (left join: "
    "null where an id has no image). Spark joins ids only; bytes are fetched once per batch "
    "straight from images.lance. Written to LAKE_URI/multimodal.lance.",
)
def multimodal_lance(
    context: AssetExecutionContext,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> MaterializeResult:
    """Join documents to images by id on Spark and commit ``multimodal.lance`` once."""
    layout = lake.layout()
    report = build_multimodal(
        spark.spark_session,
        text_uri=layout.texts,
        image_uri=layout.images,
        out_uri=layout.multimodal,
        text_storage=object_store.storage_options(layout.texts),
        image_storage=object_store.storage_options(layout.images),
        out_storage=object_store.storage_options(layout.multimodal),
    )
    context.log.info(
        f"joined {report.summary.num_rows} documents: {report.images_attached} images attached, "
        f"{report.dangling_references} dangling references; version {report.summary.version}"
    )
    return lance_result(
        report.summary,
        object_store.storage_options(layout.multimodal),
        image_slots=report.num_slots,
        images_attached=report.images_attached,
        dangling_references=report.dangling_references,
        images_version=report.image_version,
        texts_version=report.text_version,
    )
