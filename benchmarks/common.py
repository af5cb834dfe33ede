"""What every benchmark shares: result rows, the Markdown table, timers and memory probes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil

T = TypeVar("T")
Row = dict[str, Any]


def row(name: str, ours: float, baseline: float | None, unit: str, *, higher: bool = True) -> Row:
    """One result row: ``{"name", "ours", "baseline", "unit", "ratio"}``.

    ``ratio`` is how many times better ours is: ``ours / baseline`` when higher is better
    (throughput), ``baseline / ours`` when lower is better (seconds, bytes).
    """
    ratio = None
    if baseline is not None and ours and baseline:
        ratio = ours / baseline if higher else baseline / ours
    return {
        "name": name,
        "ours": _round(ours),
        "baseline": None if baseline is None else _round(baseline),
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 3),
    }


def _round(value: float) -> float:
    return round(value, 4) if abs(value) < 10 else round(value, 2)


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| measurement | ours | baseline | unit | ratio |", "|---|---:|---:|---|---:|"]
    for r in rows:
        cells = [r["name"], r["ours"], r["baseline"], r["unit"], r["ratio"]]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` once; return its result and the wall seconds it took."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed runs of ``fn``, in seconds."""
    return min(timed(fn)[1] for _ in range(repeats))


def tree_memory(pid: int) -> int:
    """Memory of process ``pid`` and all its descendants (JVM, Python workers), in bytes.

    Each process counts its proportional set size (PSS): a page shared by k processes
    counts 1/k in each. Summing resident sizes (RSS) instead would count the pages Spark's
    forked Python workers share with their daemon once per worker: 0.5-0.8 GB too much
    in a full materialization here. Falls back to RSS where PSS cannot be read.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            try:
                total += proc.memory_full_info().pss
            except psutil.AccessDenied:
                total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class PeakMemory:
    """Samples the memory of a process tree (:func:`tree_memory`) in a thread; keeps the peak.

    Use as a context manager around the work; ``peak`` is in bytes. ``pid`` defaults to this
    process, so a Spark driver's JVM and its Python workers (children) are included.
    """

    pid: int = 0
    interval_s: float = 0.1
    peak: int = 0

    def __post_init__(self) -> None:
        self.pid = self.pid or os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_memory(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak = tree_memory(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_memory(self.pid))


MB = 1e6
MiB = 1024 * 1024


@dataclass
class Context:
    """What one ``python -m benchmarks`` run hands to each section.

    Attributes:
        n: Images in the main data set (``--n``); documents are ``n // 2``.
        cache: Generated data, kept between runs (deterministic, so reusable).
        work: Scratch folder of this run (Lance datasets, Parquet files); removed after.
        master: Spark master for the sections that use Spark.
    """

    n: int
    cache: Any
    work: Any
    master: str = "local[*]"
    _spark: Any = None

    def data(self, n: int | None = None, num_docs: int | None = None) -> Any:
        """The generated data set of ``n`` images (default ``self.n``), made on first use."""
        from benchmarks.data import prepare

        return prepare(self.cache, self.n if n is None else n, num_docs)

    def spark(self) -> Any:
        """The one Spark session of the run (started on first use, shared by sections)."""
        if self._spark is None:
            from vlm_lake.spark.session import build_spark_session

            self._spark = build_spark_session(master=self.master, app_name="vlm-lake-bench")
        return self._spark

    def stop_spark(self) -> None:
        """Stop the shared session, if one was started."""
        if self._spark is not None:
            self._spark.stop()
            self._spark = None

    def inputs(self, n: int | None = None, folder: str | None = None) -> Any:
        """Published ``images.lance`` and ``texts.lance`` of the ``n``-image data set (no
        join), ingested through the pipeline's own functions, once per run and folder.

        Returns:
            The :class:`~vlm_lake.lake.LakeLayout` under ``work/<folder>`` (default
            ``lake-n<N>``).
        """
        from vlm_lake.ingest.images import ingest_images
        from vlm_lake.ingest.texts import ingest_texts
        from vlm_lake.lake import LakeLayout
        from vlm_lake.store.object_store import ObjectStore
        from vlm_lake.tables import publish

        n = self.n if n is None else n
        layout = LakeLayout.at(str(self.work / (folder or f"lake-n{n}")))
        if publish.published(layout.texts) is not None:
            return layout
        data = self.data(n)
        store = ObjectStore()
        images = ingest_images(store, str(data.images), layout.images)
        publish.publish(layout.images, images.summary.version)
        texts = ingest_texts(store, str(data.texts), layout.texts)
        publish.publish(layout.texts, texts.summary.version)
        return layout

    def lake(self, n: int | None = None) -> Any:
        """``images.lance``, ``texts.lance`` and ``multimodal.lance`` of the ``n``-image data
        set, built through the pipeline's own functions and published, once per run.

        Returns:
            The :class:`~vlm_lake.lake.LakeLayout` under ``work/lake-n<N>``.
        """
        from vlm_lake.multimodal.join import build_multimodal
        from vlm_lake.tables import publish

        layout = self.inputs(n)
        if publish.published(layout.multimodal) is not None:
            return layout
        joined = build_multimodal(
            self.spark(), text_uri=layout.texts, image_uri=layout.images, out_uri=layout.multimodal
        )
        publish.publish(layout.multimodal, joined.summary.version, joined.lineage())
        return layout
