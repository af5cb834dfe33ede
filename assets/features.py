"""The feature asset: published ``image_lance`` -> ``image_features`` (ResNet-50 on Spark)."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.automation import FOLLOW_UPSTREAM
from assets.gate import check_specs, checked_lance_result
from assets.ingest import GROUP
from resources.feature_model import FeatureModelResource
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks import check_features
from vlm_lake.features.extract import extract_features
from vlm_lake.features.model import MODEL_NAME
from vlm_lake.tables import lance_io


class FeaturesConfig(Config):
    """Run configuration of the feature step."""

    full_rebuild: bool = Field(
        default=False,
        description="Compute every image again, not only new or changed ones.",
    )


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    group_name=GROUP,
    deps=["image_lance"],
    kinds={"lance", "spark", "pytorch"},
    check_specs=check_specs("image_features"),
    description="ResNet-50 features (2048 float32, global average pool) of every image of the "
    "published image_lance, with the model and weights identity. Computed on Spark in "
    "batches; incremental by sha256 and weights. Weights from RESNET50_WEIGHTS, else random "
    "(said in the metadata). LAKE_URI/image_features.lance; readers see the 'published' tag.",
)
def image_features(
    context: AssetExecutionContext,
    config: FeaturesConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
    feature_model: FeatureModelResource,
) -> MaterializeResult:
    """Compute the features that are missing or stale, check them, publish them."""
    layout = lake.layout()
    image_storage = object_store.storage_options(layout.images)
    out_storage = object_store.storage_options(layout.image_features)
    weights = feature_model.weights(object_store.store())
    report = extract_features(
        lambda: spark.spark_session,
        image_uri=layout.images,
        out_uri=layout.image_features,
        weights=weights,
        settings=feature_model.settings(),
        image_storage=image_storage,
        out_storage=out_storage,
        store_settings=object_store.settings(),
        full_rebuild=config.full_rebuild,
    )
    context.log.info(
        f"computed {report.computed} image features ({report.images_per_second:.1f} images/s "
        f"on {report.tasks} tasks, {report.device}, {report.precision}), kept {report.reused}, "
        f"removed {report.deleted}; version {report.summary.version} has "
        f"{report.summary.num_rows} rows; vector index: {report.vector_index.describe()}"
    )
    version = report.summary.version
    outcomes = check_features(
        lance_io.open_dataset(layout.image_features, out_storage, version),
        lance_io.open_dataset(layout.images, image_storage, report.image_version),
        model=MODEL_NAME,
        weights=weights.identity,
        random_init=weights.random_init,
        storage=out_storage,
        spark=lambda: spark.spark_session,
    )
    return checked_lance_result(
        context,
        "image_features",
        report.summary,
        out_storage,
        outcomes,
        lineage=report.lineage(),
        weights=MetadataValue.text(weights.source),
        weights_identity=MetadataValue.text(weights.identity),
        model=MetadataValue.text(MODEL_NAME),
        device=report.device,
        precision=report.precision,
        compiled=report.compiled,
        committed=report.committed,
        full_rebuild=report.full_rebuild,
        computed=report.computed,
        reused=report.reused,
        deleted=report.deleted,
        images_per_second=MetadataValue.float(round(report.images_per_second, 2)),
        spark_seconds=MetadataValue.float(round(report.seconds, 2)),
        tasks=report.tasks,
        task_slots=report.task_slots,
        threads_per_task=report.threads_per_task,
        models_built=report.models_built,
        vector_index=MetadataValue.text(report.vector_index.describe()),
        images_version=report.image_version,
    )
