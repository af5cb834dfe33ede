"""Ingest assets: raw uploads -> ``image_lance`` / ``text_lance`` and their quarantines.

Both ingests are one multi-asset skeleton (:func:`_ingest_multi_asset`) over a
:class:`_Source`: the step writes the candidate version (incremental merge), checks it,
publishes it if the blocking checks pass, and records the current rejections. Any subset
of the two outputs can be materialized:

* the table and its quarantine: the ingest, and the rejections table rewritten;
* the table alone: the ingest; the rejections are logged and counted in its metadata,
  but the quarantine table (not selected) is left as it is;
* the quarantine alone: the source is validated and its rejections recorded, without
  writing the table (see ``quarantine_images`` / ``quarantine_texts``).
"""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from assets.gallery import image_lance_gallery
from assets.gate import check_specs, checked_lance_result
from assets.metadata import markdown_table
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks import check_images, check_texts
from vlm_lake.curation.image_report import signal_counts
from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.ingest.changes import IngestReport
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images, quarantine_images
from vlm_lake.ingest.texts import TextIngestOptions, ingest_texts, quarantine_texts
from vlm_lake.lake import LakeLayout
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
    engine: str = Field(
        default="auto",
        description="'local' (the run's process does the work), 'spark' (Spark tasks: "
        "images are downloaded and written, texts scanned per file or byte range and "
        "written) or 'auto' (Spark from 5,000 image downloads, or 256 MB of text files).",
    )


@dataclass(frozen=True)
class _Source:
    """One raw source, the table its ingest writes, and how the skeleton drives it."""

    step: str
    table: AssetSpec
    rejects: AssetSpec
    source_uri: Callable[[LakeResource], str]
    table_uri: Callable[[LakeLayout], str]
    rejects_uri: Callable[[LakeLayout], str]
    options: Callable[[IngestConfig, ObjectStoreResource], Any]
    ingest: Callable[..., IngestReport]
    quarantine: Callable[..., list[Any]]
    check: Callable[[Any, IngestReport], list[Any]]
    summary: Callable[[IngestReport], str]
    metadata: Callable[[IngestReport, Any, list[Any]], dict[str, Any]]
    engine: Callable[[SparkResource], dict[str, Any]] = lambda _spark: {}


def _change_metadata(report: IngestReport) -> dict[str, Any]:
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


def _change_summary(report: IngestReport) -> str:
    """The log line's common part: counts, and the version written (or that none was)."""
    return (
        f"{report.inserted} inserted, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.deleted} deleted, {len(report.rejected)} rejected; "
        + (f"version {report.summary.version}" if report.committed else "nothing to commit")
    )


def _rejects_result(asset: str, uri: str, storage: dict[str, str], rows: list) -> MaterializeResult:
    columns = ("source_uri", "stage", "line", "docid", "reason")
    preview = [{k: v for k, v in vars(r).items() if k in columns} for r in rows[:20]]
    try:
        version: Any = lance_io.open_dataset(uri, storage).version
    except DatasetNotFoundError:
        version = MetadataValue.text("none")
    return MaterializeResult(
        asset_key=asset,
        metadata={
            "dagster/row_count": len(rows),
            "dagster/uri": uri,
            "lance/version": version,
            "rejections": MetadataValue.md(markdown_table(preview, max_chars=120)),
        },
    )


def _run_ingest(
    source: _Source,
    context: AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> Iterator[MaterializeResult]:
    """The step: ingest, check, publish and/or record the rejections, as selected."""
    selected = context.selected_asset_keys
    layout = lake.layout()
    store = object_store.store()
    table, rejects = source.table.key.to_user_string(), source.rejects.key.to_user_string()
    table_uri, rejects_uri = source.table_uri(layout), source.rejects_uri(layout)
    options = source.options(config, object_store)
    if source.table.key in selected:
        report = source.ingest(
            store,
            source.source_uri(lake),
            table_uri,
            options,
            rejects_uri=rejects_uri,
            record_rejects=source.rejects.key in selected,
            **source.engine(spark),
        )
        context.log.info(f"{table}: {source.summary(report)}; {_change_summary(report)}")
        storage = store.storage_options(table_uri)
        candidate = lance_io.open_dataset(table_uri, storage, report.summary.version)
        outcomes = source.check(candidate, report)
        yield checked_lance_result(
            context,
            table,
            report.summary,
            storage,
            outcomes,
            source_uri=source.source_uri(lake),
            **_change_metadata(report),
            **source.metadata(report, candidate, outcomes),
        )
        rejected = report.rejected
    else:
        rejected = source.quarantine(
            store, source.source_uri(lake), table_uri, options, rejects_uri=rejects_uri
        )
        context.log.info(f"{rejects}: {len(rejected)} current rejections ({table} not written)")
    if source.rejects.key in selected:
        yield _rejects_result(rejects, rejects_uri, store.storage_options(rejects_uri), rejected)


def _ingest_multi_asset(source: _Source) -> AssetsDefinition:
    """The multi-asset of one source: its table and its quarantine, subsettable."""

    @multi_asset(
        name=source.step,
        specs=[source.table, source.rejects],
        check_specs=check_specs(source.table.key.to_user_string()),
        can_subset=True,
    )
    def _ingest(
        context: AssetExecutionContext,
        config: IngestConfig,
        lake: LakeResource,
        object_store: ObjectStoreResource,
        spark: SparkResource,
    ) -> Iterator[MaterializeResult]:
        yield from _run_ingest(source, context, config, lake, object_store, spark)

    return _ingest


def _image_options(config: IngestConfig, object_store: ObjectStoreResource) -> Any:
    return ImageIngestOptions(
        workers=object_store.download_workers,
        full_rebuild=config.full_rebuild,
        on_bad_input=config.on_bad_input,
        delete_missing=config.delete_missing,
        engine=config.engine,
    )


def _text_options(config: IngestConfig, _object_store: ObjectStoreResource) -> Any:
    return TextIngestOptions(
        full_rebuild=config.full_rebuild,
        on_bad_input=config.on_bad_input,
        delete_missing=config.delete_missing,
        engine=config.engine,
    )


IMAGES = _Source(
    step="ingest_images",
    table=AssetSpec(
        "image_lance",
        group_name=GROUP,
        kinds={"lance", "s3", "python"},
        description="One row per uploaded image: id (file stem), original bytes, source "
        "URI and ETag, sha256, size, format, width, height. LAKE_URI/images.lance; "
        "readers see the 'published' tag.",
    ),
    rejects=AssetSpec(
        "rejected_images",
        group_name=GROUP,
        kinds={"lance"},
        description="Image objects that were not ingested, each with its reason "
        "(not an image, truncated, empty, too many pixels, duplicate stem). "
        "LAKE_URI/rejected_images.lance.",
    ),
    source_uri=lambda lake: lake.raw_images_uri,
    table_uri=lambda layout: layout.images,
    rejects_uri=lambda layout: layout.rejected_images,
    options=_image_options,
    ingest=ingest_images,
    quarantine=quarantine_images,
    check=lambda ds, report: check_images(ds, report.written_ids),
    summary=lambda r: (
        f"{r.objects} downloaded ({r.bytes / 1e6:.1f} MB) in {r.seconds:.1f}s"
        + (f" by {r.tasks} Spark tasks" if r.tasks else "")
    ),
    metadata=lambda r, ds, outcomes: {
        "downloaded_bytes": r.bytes,
        "seconds": round(r.seconds, 3),
        "spark_tasks": r.tasks,
        # images each quality signal flags (plotted over time; docs/curation.md)
        **{f"images_{flag}": n for flag, n in signal_counts(ds).items()},
        # thumbnails: new images, largest perceptual clusters
        **image_lance_gallery(ds, r.written_ids, outcomes),
    },
    engine=lambda spark: {"spark": lambda: spark.spark_session},
)

TEXTS = _Source(
    step="ingest_texts",
    table=AssetSpec(
        "text_lance",
        group_name=GROUP,
        kinds={"lance", "s3", "python"},
        description="One row per document: docid, text, image_id1..K, source_uri, "
        "record_sha256, from the JSON / JSON Lines under RAW_TEXTS_URI. "
        "LAKE_URI/texts.lance; readers see the 'published' tag.",
    ),
    rejects=AssetSpec(
        "rejected_documents",
        group_name=GROUP,
        kinds={"lance"},
        description="Documents (or whole files) that were not ingested, each with file, "
        "stage, line and reason. LAKE_URI/rejected_documents.lance.",
    ),
    source_uri=lambda lake: lake.raw_texts_uri,
    table_uri=lambda layout: layout.texts,
    rejects_uri=lambda layout: layout.rejected_documents,
    options=_text_options,
    ingest=ingest_texts,
    quarantine=quarantine_texts,
    check=lambda ds, _report: check_texts(ds),
    summary=lambda r: f"{r.documents} valid documents in {r.files} file(s), K={r.num_slots}",
    metadata=lambda r, _ds, _outcomes: {
        "source_files": r.files,
        "image_slots": r.num_slots,
        "spark_tasks": r.spark_tasks,
    },
    engine=lambda spark: {"spark": lambda: spark.spark_session},
)

ingest_images_asset = _ingest_multi_asset(IMAGES)
ingest_texts_asset = _ingest_multi_asset(TEXTS)
