"""What the feature job's Spark tasks run, and how the work is cut into tasks.

A task gets a work unit of image positions in ``images.lance``; it takes their bytes
straight from Lance (never through the JVM), decodes a batch, runs the process's cached
ResNet-50 on it and writes the rows as fragments of ``image_features.lance``
(:mod:`vlm_lake.spark.fragment_job`). The task object carries URIs, positions and a
handle on the weights (a broadcast, or what a Spark Connect worker needs to load them
itself), never the weights.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_lake.features.model import MODEL_NAME, cached_model, state_dict_bytes
from vlm_lake.features.resnet import resnet50
from vlm_lake.spark.fragment_job import FragmentSink, FragmentTask
from vlm_lake.spark.session import spark_context
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import lance_io
from vlm_lake.tables.contracts import FEATURE_DIM, FEATURES_SCHEMA

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class BroadcastWeights:
    """State-dict bytes shipped once per executor with a Spark broadcast."""

    handle: Any

    def __call__(self) -> bytes:
        """The state-dict bytes, from this executor's copy of the broadcast."""
        return bytes(self.handle.value)


#: The session's weights broadcast: (SparkContext, identity, BroadcastWeights). One is
#: kept between runs, so a later run of the same weights pays neither serialising 100 MB
#: nor shipping it again; broadcasting other weights destroys it.
_BROADCAST: list[tuple[Any, str, BroadcastWeights]] = []
_BROADCAST_LOCK = threading.Lock()


def broadcast_weights(sc: Any, identity: str, payload: Callable[[], bytes]) -> BroadcastWeights:
    """The broadcast of these weights on ``sc``, made on first use and then reused.

    Args:
        sc: The SparkContext.
        identity: The weights identity (same identity, same bytes).
        payload: Returns the ``state_dict`` bytes; called only when a broadcast is made.
    """
    with _BROADCAST_LOCK:
        if _BROADCAST:
            old_sc, old_identity, old = _BROADCAST[0]
            if old_sc is sc and old_identity == identity and sc._jsc is not None:
                log.info("reusing the broadcast of the ResNet-50 weights (%s)", identity)
                return old
            if old_sc is sc and sc._jsc is not None:
                old.handle.destroy()
            _BROADCAST.clear()
        data = payload()
        log.info("broadcasting %.1f MB of ResNet-50 weights (%s)", len(data) / 1e6, identity)
        weights = BroadcastWeights(sc.broadcast(data))
        _BROADCAST.append((sc, identity, weights))
        return weights


@dataclass(frozen=True)
class SeedWeights:
    """Random weights rebuilt from the seed (Spark Connect, which has no broadcast)."""

    seed: int

    def __call__(self) -> bytes:
        """The state-dict bytes of the seeded random initialisation."""
        return state_dict_bytes(resnet50(self.seed))


@dataclass(frozen=True)
class StoreWeights:
    """Weights read by each worker from their URI (Spark Connect); checked by digest."""

    uri: str
    identity: str
    settings: StoreSettings | None = field(repr=False)

    def __call__(self) -> bytes:
        """The weights file's bytes, refused if they are not the ones the driver read."""
        payload = ObjectStore(self.settings).read_bytes(self.uri)
        digest = f"sha256:{hashlib.sha256(payload).hexdigest()}"
        if digest != self.identity:
            raise RuntimeError(
                f"RESNET50_WEIGHTS={self.uri!r} changed during the run: the driver read "
                f"{self.identity}, this worker read {digest}; run again"
            )
        return payload


@dataclass
class ExtractTask(FragmentTask):
    """Runs in Spark's Python workers: work units of image positions -> feature fragments.

    Statistics per task: ``order`` (its first unit), ``pid``, ``built`` (whether it built
    the model), ``build_s``, ``decode_s`` and ``model_s``.
    """

    image_uri: str
    image_version: int
    positions: np.ndarray
    units: list[tuple[int, int]]
    weights: Any
    identity: str
    device: str
    precision: str
    compiled: bool
    batch_size: int
    threads: int
    jpeg_draft: bool
    sink: FragmentSink
    image_storage: dict[str, str] = field(repr=False)

    def rows(
        self, batches: Iterator[pa.RecordBatch], stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        """The feature rows of every unit in this partition (one unit per partition)."""
        import torch

        torch.set_num_threads(self.threads)
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                started = time.perf_counter()
                model, built = cached_model(
                    self.identity, self.device, self.precision, self.weights, self.compiled
                )
                if "order" not in stats:
                    stats.update(order=int(unit), pid=os.getpid(), built=False, decode_s=0.0)
                    stats.update(model_s=0.0, build_s=0.0)
                stats["built"] = stats["built"] or built
                stats["build_s"] += time.perf_counter() - started
                start, stop = self.units[int(unit)]
                yield from self._features(model, self.positions[start:stop], stats)

    def _features(
        self, model: Any, positions: np.ndarray, stats: dict[str, Any]
    ) -> Iterator[pa.RecordBatch]:
        import torch

        ds = lance_io.open_dataset(self.image_uri, self.image_storage, self.image_version)
        for offset in range(0, len(positions), self.batch_size):
            chunk = positions[offset : offset + self.batch_size].tolist()
            started = time.perf_counter()
            table = ds.take(chunk, columns=["image_id", "sha256", "image_data"])
            ids = table.column("image_id").to_pylist()
            batch = torch.stack(
                [
                    self._decode(i, d)
                    for i, d in zip(ids, table.column("image_data").to_pylist(), strict=True)
                ]
            )
            decoded = time.perf_counter()
            features = model(batch, pad_to=self.batch_size)
            stats["decode_s"] += decoded - started
            stats["model_s"] += time.perf_counter() - decoded
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

    def _decode(self, image_id: str, data: bytes) -> Any:
        from PIL import Image

        from vlm_lake.imaging.transforms import imagenet_uint8

        try:
            return imagenet_uint8(data, draft=self.jpeg_draft)
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(
                f"image_id={image_id!r} in {self.image_uri!r} (version "
                f"{self.image_version}) cannot be decoded for features: {exc}"
            ) from exc
