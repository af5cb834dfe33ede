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
   pickled module), and each Python worker builds the model once
   (:func:`~vlm_lake.feature_model.cached_model`) and keeps it for later tasks.
4. Each task decodes a batch, runs it under ``torch.inference_mode`` in channels-last (bf16
   autocast where the hardware has it) with ``threads_per_task`` torch threads, and writes
   the rows as Lance fragments. The driver commits all fragments in one Lance commit (an
   ``Update`` that also drops the stale rows, when incremental).
5. Once there are enough rows, a vector index on ``features`` is created or brought up to
   date (:func:`~vlm_lake.similarity.ensure_vector_index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_lake import lance_io, publish
from vlm_lake.feature_model import (
    MODEL_NAME,
    ModelWeights,
    cached_model,
    resolve_device,
    resolve_precision,
    state_dict_bytes,
)
from vlm_lake.object_store import ObjectStore, StoreSettings
from vlm_lake.resnet import FEATURE_DIM, resnet50
from vlm_lake.similarity import VectorIndexReport, ensure_vector_index
from vlm_lake.spark_progress import SparkProgress
from vlm_lake.spark_session import spark_context

log = logging.getLogger(__name__)

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("features", pa.list_(pa.float32(), FEATURE_DIM), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("precision", pa.string(), nullable=False),
    ]
)

#: Default rows before a vector index is built: below that a flat scan is fast and exact.
INDEX_MIN_ROWS = 5000


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed (not *what*: that is the weights and the model).

    Attributes:
        device: ``auto`` (cuda when present, else cpu), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 where the device has it in hardware), ``fp32``, ``bf16``.
        batch_size: Images per forward pass; None means 8 on the CPU (fits the caches of
            small cores best, measured) and 64 on a GPU.
        threads_per_task: Torch threads per Spark task; None chooses them so that
            concurrent tasks x threads does not exceed the cores (see :func:`task_layout`).
        max_images_per_task: Upper bound of a work unit: smaller units give a finer
            progress log and cheaper retries, larger ones fewer fragments.
        min_images_per_task: Lower bound of a work unit (except for the last few images):
            a small job runs as fewer tasks with more threads each, so fewer Python
            workers import torch and build the model (a few seconds each).
        jpeg_draft: Decode large JPEGs at a reduced DCT scale (see ``imagenet_uint8``).
        index_min_rows: Rows before a vector index on ``features`` is built (>= 256).
        progress_interval_s: Seconds between two progress log lines.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    threads_per_task: int | None = None
    max_images_per_task: int = 256
    min_images_per_task: int = 32
    jpeg_draft: bool = True
    index_min_rows: int = INDEX_MIN_ROWS
    progress_interval_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "threads_per_task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a whole number >= 1 or None")
        if not isinstance(self.max_images_per_task, int) or self.max_images_per_task < 1:
            raise ValueError(
                f"max_images_per_task={self.max_images_per_task!r} must be a whole number >= 1"
            )
        if not 1 <= self.min_images_per_task <= self.max_images_per_task:
            raise ValueError(
                f"min_images_per_task={self.min_images_per_task!r} must be between 1 and "
                f"max_images_per_task={self.max_images_per_task!r}"
            )
        if self.index_min_rows < 256:
            raise ValueError(
                f"index_min_rows={self.index_min_rows!r} must be >= 256 (PQ codebooks train "
                "on 256 rows)"
            )


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


def task_layout(
    spark: Any, threads_per_task: int | None = None, tasks: int | None = None
) -> tuple[int, int]:
    """``(task_slots, threads_per_task)`` for this Spark session.

    ``local[N]`` runs N tasks at once on this machine's cores, so each task gets
    ``cores // min(N, tasks)`` torch threads (at least 1): tasks running at once x threads
    never exceeds the cores, and a job of fewer tasks than slots still uses every core.
    On a cluster each task gets ``spark.task.cpus`` threads, Spark's own promise of how
    many cores a task may use (set it to the threads you want per model). Under Spark
    Connect the slots come from ``spark.default.parallelism`` when it is set.

    Args:
        spark: The SparkSession.
        threads_per_task: An explicit choice, which wins.
        tasks: Tasks the job will run, when known.

    Returns:
        Concurrent task slots and torch threads per task.
    """
    cores = os.cpu_count() or 1
    sc = spark_context(spark)
    if sc is not None:
        slots, master = int(sc.defaultParallelism), str(sc.master)
        task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    else:
        slots = int(spark.conf.get("spark.default.parallelism", str(cores)))
        master, task_cpus = "", int(spark.conf.get("spark.task.cpus", "1"))
    slots = max(1, slots)
    if threads_per_task is None:
        running = min(slots, tasks) if tasks else slots
        threads_per_task = max(1, cores // running) if master.startswith("local") else task_cpus
    return slots, threads_per_task


def plan_units(
    count: int, slots: int, max_per_unit: int, min_per_unit: int = 1
) -> list[tuple[int, int]]:
    """Split ``count`` items into ``[start, stop)`` work units.

    There are a multiple of ``slots`` units (so every slot gets the same share), each of at
    most ``max_per_unit`` items, none empty; but no more than ``count / min_per_unit``
    units, because each task that starts a fresh worker pays for building the model.
    """
    if count <= 0:
        return []
    rounds = math.ceil(count / (slots * max_per_unit))
    units = max(1, min(count, slots * rounds, count // min_per_unit))
    edges = np.linspace(0, count, units + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


# --- what the workers run -------------------------------------------------------------------


@dataclass(frozen=True)
class _BroadcastWeights:
    """State-dict bytes shipped once per executor with a Spark broadcast."""

    handle: Any

    def __call__(self) -> bytes:
        return bytes(self.handle.value)


@dataclass(frozen=True)
class _SeedWeights:
    """Random weights rebuilt from the seed (Spark Connect, which has no broadcast)."""

    seed: int

    def __call__(self) -> bytes:
        return state_dict_bytes(resnet50(self.seed))


@dataclass(frozen=True)
class _StoreWeights:
    """Weights read by each worker from their URI (Spark Connect); checked by digest."""

    uri: str
    identity: str
    settings: StoreSettings | None = field(repr=False)

    def __call__(self) -> bytes:
        payload = ObjectStore(self.settings).read_bytes(self.uri)
        digest = f"sha256:{hashlib.sha256(payload).hexdigest()}"
        if digest != self.identity:
            raise RuntimeError(
                f"RESNET50_WEIGHTS={self.uri!r} changed during the run: the driver read "
                f"{self.identity}, this worker read {digest}; run again"
            )
        return payload


_RESULT_SCHEMA = pa.schema(
    [
        pa.field("unit", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("pid", pa.int64()),
        pa.field("built", pa.bool_()),
        pa.field("build_s", pa.float64()),
        pa.field("decode_s", pa.float64()),
        pa.field("model_s", pa.float64()),
        pa.field("fragments", pa.string()),
    ]
)
_RESULT_DDL = (
    "unit long, rows long, pid long, built boolean, build_s double, decode_s double, "
    "model_s double, "
    "fragments string"
)


@dataclass
class _ExtractTask:
    """Runs in Spark's Python workers: one work unit of image positions -> fragments."""

    image_uri: str
    image_version: int
    out_uri: str
    positions: np.ndarray
    units: list[tuple[int, int]]
    weights: Any
    identity: str
    device: str
    precision: str
    batch_size: int
    threads: int
    jpeg_draft: bool
    image_storage: dict[str, str] = field(repr=False)
    out_storage: dict[str, str] = field(repr=False)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch

        torch.set_num_threads(self.threads)
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                yield self._run(int(unit))

    def _run(self, unit: int) -> pa.RecordBatch:
        started = time.perf_counter()
        model, built = cached_model(self.identity, self.device, self.precision, self.weights)
        build_s = time.perf_counter() - started
        start, stop = self.units[unit]
        timings = {"decode": 0.0, "model": 0.0}
        rows = self._rows(model, self.positions[start:stop], timings)
        fragments = lance_io.write_fragment_files(
            rows, self.out_uri, FEATURES_SCHEMA, self.out_storage
        )
        return pa.RecordBatch.from_pydict(
            {
                "unit": [unit],
                "rows": [stop - start],
                "pid": [os.getpid()],
                "built": [built],
                "build_s": [build_s],
                "decode_s": [timings["decode"]],
                "model_s": [timings["model"]],
                "fragments": [json.dumps(fragments)],
            },
            schema=_RESULT_SCHEMA,
        )

    def _rows(
        self, model: Any, positions: np.ndarray, timings: dict[str, float]
    ) -> Iterator[pa.RecordBatch]:
        import torch
        from PIL import Image

        from vlm_lake.preprocess import imagenet_uint8

        ds = lance_io.open_dataset(self.image_uri, self.image_storage, self.image_version)
        for offset in range(0, len(positions), self.batch_size):
            chunk = positions[offset : offset + self.batch_size].tolist()
            started = time.perf_counter()
            table = ds.take(chunk, columns=["image_id", "sha256", "image_data"])
            ids = table.column("image_id").to_pylist()
            tensors = []
            for image_id, data in zip(ids, table.column("image_data").to_pylist(), strict=True):
                try:
                    tensors.append(imagenet_uint8(data, draft=self.jpeg_draft))
                except (OSError, Image.DecompressionBombError) as exc:
                    raise ValueError(
                        f"image_id={image_id!r} in {self.image_uri!r} (version "
                        f"{self.image_version}) cannot be decoded for features: {exc}"
                    ) from exc
            batch = torch.stack(tensors)
            decoded = time.perf_counter()
            features = model(batch)
            timings["decode"] += decoded - started
            timings["model"] += time.perf_counter() - decoded
            n = len(ids)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(ids, pa.string()),
                    table.column("sha256").combine_chunks().cast(pa.string()),
                    pa.FixedSizeListArray.from_arrays(
                        pa.array(features.reshape(-1), pa.float32()), FEATURE_DIM
                    ),
                    pa.array([MODEL_NAME] * n, pa.string()),
                    pa.array([self.identity] * n, pa.string()),
                    pa.array([self.precision] * n, pa.string()),
                ],
                schema=FEATURES_SCHEMA,
            )


# --- the driver -------------------------------------------------------------------------------


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
            return _SeedWeights(weights.seed)
        return _StoreWeights(weights.source, weights.identity, store)
    payload = weights.payload()
    log.info("broadcasting %.1f MB of ResNet-50 weights (%s)", len(payload) / 1e6, weights.identity)
    return _BroadcastWeights(sc.broadcast(payload))


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
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    batch_size = settings.batch_size or (64 if device == "cuda" else 8)
    image_ds = publish.open_version(image_uri, image_storage, image_version)
    prev = _previous(out_uri, out_storage, full_rebuild)
    plan = _plan(image_ds, prev, weights.identity)
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
    results: list[dict[str, Any]] = []
    slots, threads, seconds = 0, 0, 0.0
    if plan.ids:
        session = spark() if callable(spark) else spark
        slots, _ = task_layout(session)
        units = plan_units(
            len(plan.ids), slots, settings.max_images_per_task, settings.min_images_per_task
        )
        slots, threads = task_layout(session, settings.threads_per_task, len(units))
        task = _ExtractTask(
            image_uri=image_uri,
            image_version=image_ds.version,
            out_uri=out_uri,
            positions=plan.positions,
            units=units,
            weights=_weights_source(session, weights, store_settings),
            identity=weights.identity,
            device=device,
            precision=precision,
            batch_size=batch_size,
            threads=threads,
            jpeg_draft=settings.jpeg_draft,
            image_storage=dict(image_storage or {}),
            out_storage=dict(out_storage or {}),
        )
        log.info(
            "running %d images as %d tasks on %d slots x %d torch threads (%s, %s, batch %d)",
            len(plan.ids),
            len(units),
            slots,
            threads,
            device,
            precision,
            batch_size,
        )
        started = time.perf_counter()
        results = _run_on_spark(session, task, settings.progress_interval_s)
        seconds = time.perf_counter() - started
    produced = sum(r["rows"] for r in results)
    if produced != len(plan.ids):  # checked before the commit: a short run is never written
        raise RuntimeError(f"the feature job produced {produced} rows for {len(plan.ids)} images")
    fragments = [f for r in results for f in json.loads(r["fragments"])]
    committed = plan.full_rebuild or bool(fragments) or bool(plan.stale)
    if plan.full_rebuild:
        ds = lance_io.commit_fragments(
            out_uri, FEATURES_SCHEMA, fragments, out_storage, mode="overwrite"
        )
    elif committed:
        ds = lance_io.replace_rows(
            out_uri, out_storage, key="image_id", remove=plan.stale, fragments_json=fragments
        )
    else:
        ds = lance_io.open_dataset(out_uri, out_storage)
    index = ensure_vector_index(out_uri, out_storage, min_rows=settings.index_min_rows)
    if index.version != ds.version:
        ds = lance_io.open_dataset(out_uri, out_storage, index.version)
    report = FeaturesReport(
        summary=lance_io.summarize(ds, out_uri),
        committed=committed or index.state in ("created", "updated"),
        full_rebuild=plan.full_rebuild,
        computed=len(plan.ids),
        computed_ids=plan.ids,
        reused=plan.reused,
        deleted=plan.deleted,
        image_version=image_ds.version,
        weights=weights,
        device=device,
        precision=precision,
        task_slots=slots,
        threads_per_task=threads,
        tasks=len(results),
        workers=len({r["pid"] for r in results}),
        models_built=sum(bool(r["built"]) for r in results),
        seconds=seconds,
        vector_index=index,
    )
    log.info(
        "image_features: computed %d (%.1f images/s, %d tasks on %d slots x %d threads, %s, "
        "%s, %d models built), kept %d, removed %d; version %d has %d rows; index: %s",
        report.computed,
        report.images_per_second,
        report.tasks,
        report.task_slots,
        report.threads_per_task,
        device,
        precision,
        report.models_built,
        report.reused,
        report.deleted,
        report.summary.version,
        report.summary.num_rows,
        index.describe(),
    )
    return report


def _run_on_spark(
    spark: Any, task: _ExtractTask, progress_interval_s: float
) -> list[dict[str, Any]]:
    """One Spark task per work unit; returns the per-unit results (fragments, timings)."""
    job = spark.range(0, len(task.units), 1, len(task.units)).mapInArrow(task, _RESULT_DDL)
    try:
        with SparkProgress(spark, "image_features", len(task.positions), progress_interval_s, log):
            rows = [r.asDict() for r in job.collect()]
    finally:
        if isinstance(task.weights, _BroadcastWeights):
            task.weights.handle.destroy()
    return sorted(rows, key=lambda r: r["unit"])
