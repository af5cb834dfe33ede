"""Ingest assets: raw uploads -> ``image_lance`` and ``text_lance``."""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.metadata import lance_result
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from vlm_lake.image_ingest import ImageIngestOptions, ingest_images
from vlm_lake.text_ingest import ingest_texts

GROUP = "vlm_lake"


@asset(
    group_name=GROUP,
    kinds={"lance", "s3", "python"},
    description="One row per uploaded image: id (file stem), original bytes, sha256, size, "
    "format, width, height. Written to LAKE_URI/images.lance.",
)
def image_lance(
    context: AssetExecutionContext, lake: LakeResource, object_store: ObjectStoreResource
) -> MaterializeResult:
    """Stream every image under RAW_IMAGES_URI into ``images.lance`` in one commit."""
    layout = lake.layout()
    store = object_store.store()
    report = ingest_images(
        store,
        lake.raw_images_uri,
        layout.images,
        ImageIngestOptions(workers=object_store.download_workers),
    )
    context.log.info(
        f"wrote {report.objects} images ({report.bytes / 1e6:.1f} MB) to {layout.images} "
        f"version {report.summary.version} in {report.seconds:.1f}s"
    )
    return lance_result(
        report.summary,
        store.storage_options(layout.images),
        source_uri=lake.raw_images_uri,
        total_bytes=report.bytes,
        seconds=round(report.seconds, 3),
    )


@asset(
    group_name=GROUP,
    kinds={"lance", "s3", "python"},
    description="One row per document: docid, text, image_id1..K. Written to "
    "LAKE_URI/texts.lance from the JSON / JSON Lines under RAW_TEXTS_URI.",
)
def text_lance(
    context: AssetExecutionContext, lake: LakeResource, object_store: ObjectStoreResource
) -> MaterializeResult:
    """Validate and write every document under RAW_TEXTS_URI into ``texts.lance``."""
    layout = lake.layout()
    store = object_store.store()
    report = ingest_texts(store, lake.raw_texts_uri, layout.texts)
    context.log.info(
        f"wrote {report.documents} documents from {report.files} file(s), K={report.num_slots}, "
        f"to {layout.texts} version {report.summary.version}"
    )
    return lance_result(
        report.summary,
        store.storage_options(layout.texts),
        source_uri=lake.raw_texts_uri,
        source_files=report.files,
        image_slots=report.num_slots,
    )
