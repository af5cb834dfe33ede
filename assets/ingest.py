"""Ingest assets: raw uploads -> ``image_lance`` / ``text_lance`` and their quarantines.

Each is a multi-asset: one step writes the candidate version (incremental merge), checks
it, publishes it if the blocking checks pass, and records the current rejections.
"""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from assets.gate import check_results, check_specs, gate_and_publish
from assets.metadata import lance_result, markdown_table
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from vlm_lake.checks import check_images, check_texts
from vlm_lake.ingest.changes import IngestReport
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.texts import TextIngestOptions, TextIngestReport, ingest_texts
from vlm_lake.tables import lance_io

GROUP = "vlm_lake"


class IngestConfig(Config):
    """Run configuration of the ingest steps (set it in the launchpad)."""

    full_rebuild: bool = Field(
        default=False, description="Re-read every source object and overwrite the table."
    )
    on_bad_input: str = Field(
        default="quarantine",
        description="'quarantine': record bad input in the rejected_* table and go on; "
        "'fail': stop the run at the first bad input.",
    )
    delete_missing: bool = Field(
        default=False,
        description="Delete rows whose source object or document is gone (mirror the "
        "source). Off: such rows are kept and counted as missing_from_source.",
    )


def _change_metadata(report: IngestReport | TextIngestReport) -> dict[str, Any]:
    """What an ingest run changed: the counts both ingest assets report."""
    return {
        "committed": report.committed,
        "full_rebuild": report.full_rebuild,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "deleted": report.deleted,
        "missing_from_source": report.missing_from_source,
        "rejected": len(report.rejected),
    }


def _change_summary(report: IngestReport | TextIngestReport) -> str:
    """The log line's common part: counts, and the version written (or that none was)."""
    return (
        f"{report.inserted} inserted, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.deleted} deleted, {len(report.rejected)} rejected; "
        + (f"version {report.summary.version}" if report.committed else "nothing to commit")
    )


def _rejects_result(asset: str, uri: str, storage: dict[str, str], rows: list) -> MaterializeResult:
    columns = ("source_uri", "stage", "line", "docid", "reason")
    preview = [{k: v for k, v in vars(r).items() if k in columns} for r in rows[:20]]
    version = None
    try:
        version = lance_io.open_dataset(uri, storage).version
    except lance_io.DatasetNotFoundError:
        version = None
    return MaterializeResult(
        asset_key=asset,
        metadata={
            "dagster/row_count": len(rows),
            "dagster/uri": uri,
            "lance/version": version if version is not None else MetadataValue.text("none"),
            "rejections": MetadataValue.md(markdown_table(preview, max_chars=120)),
        },
    )


@multi_asset(
    name="ingest_images",
    specs=[
        AssetSpec(
            "image_lance",
            group_name=GROUP,
            kinds={"lance", "s3", "python"},
            description="One row per uploaded image: id (file stem), original bytes, source "
            "URI and ETag, sha256, size, format, width, height. LAKE_URI/images.lance; "
            "readers see the 'published' tag.",
        ),
        AssetSpec(
            "rejected_images",
            group_name=GROUP,
            kinds={"lance"},
            description="Image objects that were not ingested, each with its reason "
            "(not an image, truncated, empty, too many pixels, duplicate stem). "
            "LAKE_URI/rejected_images.lance.",
        ),
    ],
    check_specs=check_specs("image_lance"),
    can_subset=False,
)
def ingest_images_asset(
    context: AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
) -> Iterator[MaterializeResult]:
    """Merge new or changed images into ``images.lance``, check, publish, record rejects."""
    layout = lake.layout()
    store = object_store.store()
    storage = store.storage_options(layout.images)
    report = ingest_images(
        store,
        lake.raw_images_uri,
        layout.images,
        ImageIngestOptions(
            workers=object_store.download_workers,
            full_rebuild=config.full_rebuild,
            on_bad_input=config.on_bad_input,
            delete_missing=config.delete_missing,
        ),
        rejects_uri=layout.rejected_images,
    )
    context.log.info(
        f"images: {report.objects} downloaded ({report.bytes / 1e6:.1f} MB) in "
        f"{report.seconds:.1f}s; {_change_summary(report)}"
    )
    version = report.summary.version
    outcomes = check_images(
        lance_io.open_dataset(layout.images, storage, version), report.written_ids
    )
    yield lance_result(
        report.summary,
        storage,
        asset_key="image_lance",
        check_results=check_results("image_lance", outcomes),
        **gate_and_publish(context, "image_lance", layout.images, storage, version, outcomes),
        source_uri=lake.raw_images_uri,
        **_change_metadata(report),
        downloaded_bytes=report.bytes,
        seconds=round(report.seconds, 3),
    )
    yield _rejects_result(
        "rejected_images",
        layout.rejected_images,
        store.storage_options(layout.rejected_images),
        report.rejected,
    )


@multi_asset(
    name="ingest_texts",
    specs=[
        AssetSpec(
            "text_lance",
            group_name=GROUP,
            kinds={"lance", "s3", "python"},
            description="One row per document: docid, text, image_id1..K, source_uri, "
            "record_sha256, from the JSON / JSON Lines under RAW_TEXTS_URI. "
            "LAKE_URI/texts.lance; readers see the 'published' tag.",
        ),
        AssetSpec(
            "rejected_documents",
            group_name=GROUP,
            kinds={"lance"},
            description="Documents (or whole unreadable files) that were not ingested, each "
            "with file, line and reason. LAKE_URI/rejected_documents.lance.",
        ),
    ],
    check_specs=check_specs("text_lance"),
    can_subset=False,
)
def ingest_texts_asset(
    context: AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
) -> Iterator[MaterializeResult]:
    """Merge new or changed documents into ``texts.lance``, check, publish, record rejects."""
    layout = lake.layout()
    store = object_store.store()
    storage = store.storage_options(layout.texts)
    report = ingest_texts(
        store,
        lake.raw_texts_uri,
        layout.texts,
        TextIngestOptions(
            full_rebuild=config.full_rebuild,
            on_bad_input=config.on_bad_input,
            delete_missing=config.delete_missing,
        ),
        rejects_uri=layout.rejected_documents,
    )
    context.log.info(
        f"texts: {report.documents} valid documents in {report.files} file(s), "
        f"K={report.num_slots}: {_change_summary(report)}"
    )
    version = report.summary.version
    outcomes = check_texts(lance_io.open_dataset(layout.texts, storage, version))
    yield lance_result(
        report.summary,
        storage,
        asset_key="text_lance",
        check_results=check_results("text_lance", outcomes),
        **gate_and_publish(context, "text_lance", layout.texts, storage, version, outcomes),
        source_uri=lake.raw_texts_uri,
        source_files=report.files,
        image_slots=report.num_slots,
        **_change_metadata(report),
    )
    yield _rejects_result(
        "rejected_documents",
        layout.rejected_documents,
        store.storage_options(layout.rejected_documents),
        report.rejected,
    )
