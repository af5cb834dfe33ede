"""``image_features``: ResNet-50 features of every image, computed on Spark, incrementally.

The seed builds the model on the driver and hands Spark a row-at-a-time UDF that closes
over it (and over the SparkContext, hence "SparkContext can only be used on the driver").
Here:

1. The driver compares the published ``image_lance`` (``image_id``, ``sha256``) with the
   published features: only images without features, whose bytes changed, or whose
   features came from other weights are computed. Rows of removed images are dropped.
2. The positions of those images are split into work units; Spark runs one task per unit
   through ``mapInArrow`` over a tiny ``range`` DataFrame. Image bytes never pass through
   the JVM: each task takes its rows straight from ``images.lance``.
3. The weights travel once: the driver broadcasts the ``state_dict`` bytes (never a
   pickled module; the broadcast is kept for the session's later runs of the same
   weights), and each Python worker builds the model once
   (:func:`~vlm_lake.features.model.cached_model`) and keeps it for later tasks.
4. Each task decodes a batch, runs it under ``torch.inference_mode`` in channels-last (in
   bf16 where the hardware has it) with ``threads_per_task`` torch threads, and writes
   the rows as Lance fragments. The driver commits all fragments in one Lance commit (an
   ``Update`` that also drops the stale rows, when incremental).
5. Once there are enough rows, a vector index on ``features`` is created or brought up to
   date (:func:`~vlm_lake.features.near_duplicates.ensure_vector_index`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlm_lake.features.model import (
    MODEL_NAME,
    ModelWeights,
    resolve_compile,
    resolve_device,
    resolve_precision,
)
from vlm_lake.features.settings import FeatureSettings
from vlm_lake.features.tasks import (
    ExtractTask,
    SeedWeights,
    StoreWeights,
    broadcast_weights,
    plan_units,
    task_layout,
)
from vlm_lake.features.vector_index import VectorIndexReport, ensure_vector_index
from vlm_lake.spark.fragment_job import FragmentSink, WrittenFragments, run_fragment_job
from vlm_lake.spark.progress import SparkProgress
from vlm_lake.spark.session import spark_context
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import fragments, lance_io, publish
from vlm_lake.tables.contracts import FEATURES_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesReport:
    """What a feature run did.

    Attributes:
        summary: The output's latest version after the run (the candidate to check).
        committed: Whether this run wrote a version (False when nothing changed).
        full_rebuild: Whether every image was computed.
        computed: Images whose features this run computed.
        computed_ids: Their image ids.
        reused: Rows kept from the published version.
        deleted: Rows dropped because their image left ``image_lance``.
        image_version: Version of ``image_lance`` read.
        weights: The weights used.
        device: Where the model ran.
        precision: ``fp32`` or ``bf16``.
        compiled: Whether the workers ran a ``torch.compile``d model.
        task_slots: Spark tasks that run at once.
        threads_per_task: Torch threads per task.
        tasks: Tasks (work units) run.
        workers: Python worker processes that ran the tasks.
        models_built: Models built by workers in this run (0 when every worker reused one).
        seconds: Wall time of the Spark job.
        vector_index: What was done about the vector index.
    """

    summary: lance_io.DatasetSummary
    committed: bool
    full_rebuild: bool
    computed: int
    computed_ids: list[str] = field(repr=False)
    reused: int
    deleted: int
    image_version: int
    weights: ModelWeights
    device: str
    precision: str
    compiled: bool
    task_slots: int
    threads_per_task: int
    tasks: int
    workers: int
    models_built: int
    seconds: float
    vector_index: VectorIndexReport

    @property
    def images_per_second(self) -> float:
        """Computed images per second of the Spark job (0 when nothing was computed)."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else 0.0

    def lineage(self) -> dict[str, str]:
        """What to record with the published tag."""
        return {"images_version": str(self.image_version), "weights": self.weights.identity}


@dataclass(frozen=True)
class _Plan:
    """Which images to compute and which rows of the published features to drop."""

    positions: np.ndarray
    ids: list[str]
    stale: set[str]
    reused: int
    deleted: int
    full_rebuild: bool


def _plan(image_ds: Any, prev_ds: Any | None, identity: str) -> _Plan:
    """Compare the images with ``prev_ds`` (None: nothing to keep, compute every image)."""
    images = image_ds.to_table(columns=["image_id", "sha256"])
    ids = images.column("image_id").to_pylist()
    shas = images.column("sha256").to_pylist()
    have: dict[str, tuple[str, str, str]] = {}
    if prev_ds is not None:
        have = lance_io.column_map(prev_ds, "image_id", "image_sha256", "model", "weights")
    current = set(ids)
    wanted = [
        i
        for i, (image_id, sha) in enumerate(zip(ids, shas, strict=True))
        if have.get(image_id) != (sha, MODEL_NAME, identity)
    ]
    computed_ids = [ids[i] for i in wanted]
    removed = set(have) - current
    redone = set(computed_ids) & set(have)
    return _Plan(
        positions=np.asarray(wanted, dtype=np.int64),
        ids=computed_ids,
        stale=removed | redone,
        reused=len(current & set(have)) - len(redone),
        deleted=len(removed),
        full_rebuild=prev_ds is None,
    )


def _previous(out_uri: str, out_storage: dict[str, str] | None, full_rebuild: bool) -> Any | None:
    """The published features to update, or None when the run must compute everything."""
    if full_rebuild or publish.discard_unpublished(out_uri, out_storage) is None:
        return None
    prev = publish.open_published(out_uri, out_storage)
    if [(f.name, f.type) for f in prev.schema] != [(f.name, f.type) for f in FEATURES_SCHEMA]:
        log.warning(
            "%s: the published schema differs from this version's (%s); recomputing all",
            out_uri,
            [f"{f.name}: {f.type}" for f in prev.schema],
        )
        return None
    return prev


def _weights_source(spark: Any, weights: ModelWeights, store: StoreSettings | None) -> Any:
    """How workers get the weights: a broadcast of the bytes, or (Connect) a rebuild/read."""
    sc = spark_context(spark)
    if sc is None:
        log.info("Spark Connect has no broadcast: workers load the weights themselves")
        if weights.random_init:
            return SeedWeights(weights.seed)
        return StoreWeights(weights.source, weights.identity, store)
    return broadcast_weights(sc, weights.identity, weights.payload)


@dataclass(frozen=True)
class _Where:
    """The datasets of one feature run and how to reach them."""

    image_uri: str
    out_uri: str
    image_storage: dict[str, str] = field(repr=False)
    out_storage: dict[str, str] = field(repr=False)
    store_settings: StoreSettings | None = field(repr=False)


def extract_features(
    spark: Any,
    *,
    image_uri: str,
    out_uri: str,
    weights: ModelWeights,
    settings: FeatureSettings | None = None,
    image_storage: dict[str, str] | None = None,
    out_storage: dict[str, str] | None = None,
    store_settings: StoreSettings | None = None,
    image_version: int | str = "published",
    full_rebuild: bool = False,
) -> FeaturesReport:
    """Compute ResNet-50 features for the images that need them and write ``image_features``.

    Args:
        spark: SparkSession, or a function returning one (called only when something has
            to be computed, so a run with nothing new starts no JVM).
        image_uri: ``images.lance`` URI.
        out_uri: ``image_features.lance`` URI.
        weights: The weights (see :meth:`ModelWeights.from_setting`).
        settings: Device, precision, batching and index settings.
        image_storage: Lance storage options for ``image_uri`` (also used by workers).
        out_storage: Lance storage options for ``out_uri`` (also used by workers).
        store_settings: Object-store settings, for workers that read the weights file
            themselves (Spark Connect only).
        image_version: Version or tag of ``image_lance`` to read.
        full_rebuild: Compute every image even if its features are current.

    Returns:
        A :class:`FeaturesReport`; its summary's version is the candidate to check.
    """
    settings = settings or FeatureSettings()
    run = _Run(resolve_device(settings.device), settings)
    run.precision = resolve_precision(settings.precision, run.device)
    where = _Where(
        image_uri, out_uri, dict(image_storage or {}), dict(out_storage or {}), store_settings
    )
    image_ds = publish.open_version(image_uri, image_storage, image_version)
    plan = _plan(image_ds, _previous(out_uri, out_storage, full_rebuild), weights.identity)
    log.info(
        "features of %s (version %d) into %s: %d to compute, %d current, %d removed (%s)",
        image_uri,
        image_ds.version,
        out_uri,
        len(plan.ids),
        plan.reused,
        plan.deleted,
        "full rebuild" if plan.full_rebuild else "incremental",
    )
    if plan.ids:
        session = spark() if callable(spark) else spark
        run.compute(session, where, image_ds.version, plan, weights)
    ds = _commit(where, plan, run.written)
    index = ensure_vector_index(out_uri, out_storage, min_rows=settings.index_min_rows)
    if index.version != ds.version:
        ds = lance_io.open_dataset(out_uri, out_storage, index.version)
    report = run.report(ds, out_uri, plan, image_ds.version, weights, index)
    log.info(
        "image_features: computed %d (%.1f images/s, %d tasks on %d slots x %d threads, %s, "
        "%s, %d models built), kept %d, removed %d; version %d has %d rows; index: %s",
        report.computed,
        report.images_per_second,
        report.tasks,
        report.task_slots,
        report.threads_per_task,
        report.device,
        report.precision,
        report.models_built,
        report.reused,
        report.deleted,
        report.summary.version,
        report.summary.num_rows,
        index.describe(),
    )
    return report


@dataclass
class _Run:
    """How one run computes: device, precision, task layout, and what its job wrote."""

    device: str
    settings: FeatureSettings
    precision: str = "fp32"
    compiled: bool = False
    slots: int = 0
    threads: int = 0
    seconds: float = 0.0
    written: WrittenFragments = field(default_factory=lambda: WrittenFragments([], 0, []))

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size or (64 if self.device == "cuda" else 8)

    def compute(
        self, spark: Any, where: _Where, image_version: int, plan: _Plan, weights: ModelWeights
    ) -> None:
        """Run the Spark job over ``plan``'s images; check it wrote one row per image."""
        settings = self.settings
        slots, _ = task_layout(spark)
        units = plan_units(
            len(plan.ids), slots, settings.max_images_per_task, settings.min_images_per_task
        )
        self.slots, self.threads = task_layout(spark, settings.threads_per_task, len(units))
        running = max(1, min(self.slots, len(units)))
        self.compiled = resolve_compile(settings.compile, len(plan.ids) / running)
        task = ExtractTask(
            image_uri=where.image_uri,
            image_version=image_version,
            positions=plan.positions,
            units=units,
            weights=_weights_source(spark, weights, where.store_settings),
            identity=weights.identity,
            device=self.device,
            precision=self.precision,
            compiled=self.compiled,
            batch_size=self.batch_size,
            threads=self.threads,
            jpeg_draft=settings.jpeg_draft,
            sink=FragmentSink(where.out_uri, FEATURES_SCHEMA, where.out_storage),
            image_storage=where.image_storage,
        )
        log.info(
            "running %d images as %d tasks on %d slots x %d torch threads (%s, %s%s, batch %d)",
            len(plan.ids),
            len(units),
            self.slots,
            self.threads,
            self.device,
            self.precision,
            ", compiled" if self.compiled else "",
            self.batch_size,
        )
        started = time.perf_counter()
        self.written = _run_on_spark(spark, task, settings.progress_interval_s)
        self.seconds = time.perf_counter() - started
        self.written.check_rows(len(plan.ids), "images")  # a short run is never committed

    def report(
        self,
        ds: Any,
        out_uri: str,
        plan: _Plan,
        image_version: int,
        weights: ModelWeights,
        index: VectorIndexReport,
    ) -> FeaturesReport:
        """The run's report, on the output version ``ds``."""
        committed = plan.full_rebuild or bool(self.written.fragments) or bool(plan.stale)
        return FeaturesReport(
            summary=lance_io.summarize(ds, out_uri),
            committed=committed or index.state in ("created", "updated"),
            full_rebuild=plan.full_rebuild,
            computed=len(plan.ids),
            computed_ids=plan.ids,
            reused=plan.reused,
            deleted=plan.deleted,
            image_version=image_version,
            weights=weights,
            device=self.device,
            precision=self.precision,
            compiled=self.compiled,
            task_slots=self.slots,
            threads_per_task=self.threads,
            tasks=len(self.written.stats),
            workers=len({s["pid"] for s in self.written.stats}),
            models_built=sum(bool(s["built"]) for s in self.written.stats),
            seconds=self.seconds,
            vector_index=index,
        )


def _commit(where: _Where, plan: _Plan, written: WrittenFragments) -> Any:
    """One commit: overwrite for a full rebuild, else stale rows out and new rows in."""
    return fragments.commit_job(
        where.out_uri,
        FEATURES_SCHEMA,
        where.out_storage,
        written.fragments,
        key="image_id",
        remove=None if plan.full_rebuild else plan.stale,
    )


def _run_on_spark(spark: Any, task: ExtractTask, progress_interval_s: float) -> WrittenFragments:
    """One Spark task per work unit; returns what the tasks wrote (fragments, timings)."""
    job = spark.range(0, len(task.units), 1, len(task.units))
    with SparkProgress(spark, "image_features", len(task.positions), progress_interval_s, log):
        return run_fragment_job(job, task)
