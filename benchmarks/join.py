"""The join: our id-only join vs the seed's three joins that carry image bytes.

Both run in the same Spark session (``Context.spark()``) on the same published
``images.lance`` and ``texts.lance`` (N images, N/2 documents):

* **ours**: :func:`~vlm_lake.multimodal.join.build_multimodal` with ``full_rebuild=True``: Spark
  joins ids only against a broadcast id table, tasks ``take`` the bytes from Lance and write
  ``multimodal.lance`` fragments, the driver commits once. Each run writes a real dataset.
* **the seed's**: both tables read through our ``lance`` data source with every column
  (``image_data`` included), then three left joins of ``df_image.select(image_id AS
  image_idK, image_data)``, renamed ``imageK``, and ``select(docid, text, image1..3)``,
  exactly as in ``seeds/000``. The seed then ``collect()``s the result onto the driver;
  here it is sunk into Spark's ``noop`` format instead: ``noop`` runs the whole plan and
  pulls every row (every byte of every joined image crosses the three shuffles and reaches
  the sink) but writes nothing, so the baseline pays no write cost at all while ours writes
  its real output. That is the most generous sink that still materialises the bytes (a
  ``count()`` would let Spark prune ``image_data`` away; ``collect()`` would need the whole
  joined table in the 2 GB driver heap).

Both run in the session that just built the lake (its own join started the JVM and the
Python workers), alternating (seed, ours; ours, seed; ...), and the best run of each is
reported, so neither side pays start-up alone. From :data:`LARGE_N` images on, two runs
of each (the seed's takes 30-60 s there on 2 cores).

Driver memory: ours runs once more on fresh inputs of N/4 and N/2 images (N/8 and N/4
documents); its first timed run at N is the third size. During each run a thread samples
the driver Python process's resident memory (what "nothing is collected" is about), the
JVM's heap in use (``Runtime.totalMemory - freeMemory``; in local mode the JVM is driver
and executors in one) and the resident memory of the whole process tree (Python driver,
JVM, Python workers). The driver's level includes whatever earlier steps in this process
left allocated (the ingest of each size's inputs runs here too); its growth during the
join is the number that shows nothing is collected.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from py4j.protocol import Py4JError

from benchmarks.common import Context, MiB, Row, row, timed, tree_memory

log = logging.getLogger("benchmarks.join")

#: Timed runs of each side at N (the best of these is reported).
REPEATS = 3
#: From this many images on, :data:`LARGE_REPEATS` timed runs each (the seed's takes long).
LARGE_N = 10_000
LARGE_REPEATS = 2


@dataclass
class MemorySampler:
    """Peak driver RSS, JVM heap in use and process-tree memory (PSS) while a block runs.

    Attributes:
        spark: The session whose JVM is sampled (through py4j, from a thread).
        interval_s: Seconds between samples.
        driver_rss: Peak resident bytes of this (driver) Python process.
        driver_rss_before: Its resident bytes when the block started.
        jvm_heap: Peak JVM heap in use, bytes.
        tree_memory: Peak memory of the driver, the JVM and the Python workers
            (:func:`~benchmarks.common.tree_memory`: PSS, shared pages split).
    """

    spark: Any
    interval_s: float = 0.05
    driver_rss: int = 0
    driver_rss_before: int = 0
    jvm_heap: int = 0
    tree_memory: int = 0

    def __post_init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._runtime = self.spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        self.driver_rss = max(self.driver_rss, self._proc.memory_info().rss)
        self.tree_memory = max(self.tree_memory, tree_memory(self._proc.pid))
        try:
            used = self._runtime.totalMemory() - self._runtime.freeMemory()
        except Py4JError:  # the gateway may be busy or closing; keep the peak so far
            return
        self.jvm_heap = max(self.jvm_heap, int(used))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self.spark.sparkContext._jvm.java.lang.System.gc()  # start from a collected heap
        self.driver_rss_before = self._proc.memory_info().rss
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def seed_join(spark: Any, text_uri: str, image_uri: str) -> Any:
    """The seed's join (``seeds/000``, ``join_vision_data``) over our ``lance`` data source.

    Args:
        spark: The session.
        text_uri: ``texts.lance`` (read at its latest version, every column).
        image_uri: ``images.lance`` (read at its latest version, every column).

    Returns:
        The joined DataFrame: ``docid, text, image1, image2, image3``.
    """
    from pyspark.sql import functions as F

    from vlm_lake.spark.lance_source import read_lance

    df_text = read_lance(spark, text_uri)
    df_image = read_lance(spark, image_uri)
    for k in (1, 2, 3):
        df_text = df_text.join(
            df_image.select(F.col("image_id").alias(f"image_id{k}"), F.col("image_data")),
            on=f"image_id{k}",
            how="left",
        ).withColumnRenamed("image_data", f"image{k}")
    return df_text.select("docid", "text", "image1", "image2", "image3")


def _run_seed(spark: Any, text_uri: str, image_uri: str) -> None:
    seed_join(spark, text_uri, image_uri).write.format("noop").mode("overwrite").save()


class _Ours:
    """Runs :func:`build_multimodal` into a fresh folder each time; keeps the last report."""

    def __init__(self, spark: Any, lake: Any, scratch: Path) -> None:
        self.spark, self.lake, self.scratch = spark, lake, scratch
        self.runs = 0
        self.report: Any = None

    def __call__(self) -> None:
        from vlm_lake.multimodal.join import build_multimodal

        self.runs += 1
        out = self.scratch / f"multimodal-{self.runs}.lance"
        self.report = build_multimodal(
            self.spark,
            text_uri=self.lake.texts,
            image_uri=self.lake.images,
            out_uri=str(out),
            full_rebuild=True,
        )
        shutil.rmtree(self.scratch / f"multimodal-{self.runs - 1}.lance", ignore_errors=True)


def _joined_bytes(lake: Any) -> int:
    """Image bytes the join attaches (what the seed would collect), from the sizes alone."""
    from vlm_lake.tables import lance_io
    from vlm_lake.tables.contracts import image_id_columns

    images = lance_io.open_dataset(lake.images).to_table(columns=["image_id", "size_bytes"])
    sizes = dict(zip(images["image_id"].to_pylist(), images["size_bytes"].to_pylist(), strict=True))
    texts = lance_io.open_dataset(lake.texts)
    slots = image_id_columns(texts.schema)
    table = texts.to_table(columns=slots)
    return sum(sizes.get(i, 0) for slot in slots for i in table[slot].to_pylist() if i)


def run(ctx: Context) -> list[Row]:
    """Time both joins at N and measure our driver memory at N/4, N/2 and N."""
    spark = ctx.spark()
    lake = ctx.lake(ctx.n)  # builds and publishes the lake; its join is our warm-up
    scratch = ctx.work / "join"
    scratch.mkdir(parents=True, exist_ok=True)
    ours = _Ours(spark, lake, scratch)
    data = ctx.data(ctx.n)
    n, docs = ctx.n, data.num_docs

    def seed() -> None:
        _run_seed(spark, lake.texts, lake.images)

    repeats = LARGE_REPEATS if n >= LARGE_N else REPEATS
    times: dict[str, list[float]] = {"seed": [], "ours": []}
    mems: dict[str, MemorySampler] = {}
    for i in range(repeats):
        order = [("seed", seed), ("ours", ours)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            with MemorySampler(spark) as mem:
                times[name].append(timed(fn)[1])
            mems.setdefault(name, mem)
        log.info(
            "join run %d: seed %.2f s, ours %.2f s", i + 1, times["seed"][-1], times["ours"][-1]
        )
    report = ours.report
    joined_bytes = _joined_bytes(lake)
    seed_s, ours_s = min(times["seed"]), min(times["ours"])
    what = f"join {docs} docs x {n} images"
    best = f"best of {repeats}"
    rows = [
        row(f"{what}, wall ({best})", ours_s, seed_s, "s", higher=False),
        row(f"{what}, documents/s", docs / ours_s, docs / seed_s, "docs/s"),
        row(
            f"{what}, joined image MiB/s",
            joined_bytes / MiB / ours_s,
            joined_bytes / MiB / seed_s,
            "MiB/s",
        ),
        row(
            f"{what}: JVM peak heap in use",
            mems["ours"].jvm_heap / MiB,
            mems["seed"].jvm_heap / MiB,
            "MiB",
            higher=False,
        ),
        row(
            f"{what}: process tree peak memory, PSS (driver+JVM+workers)",
            mems["ours"].tree_memory / MiB,
            mems["seed"].tree_memory / MiB,
            "MiB",
            higher=False,
        ),
    ]
    log.info(
        "join: %d rows, %d images attached, %d dangling; %.0f MiB of joined image bytes (the "
        "seed's collect() would hold all of them on the driver, twice over once hex-encoded)",
        report.rows_written,
        report.images_attached,
        report.dangling_references,
        joined_bytes / MiB,
    )
    measured = [(size, _measure_ours(ctx, spark, size)) for size in (n // 4, n // 2)]
    measured.append((n, mems["ours"]))
    for size, mem in measured:
        log.info(
            "join memory at N=%d: driver RSS %.0f -> peak %.0f MiB, JVM heap peak %.0f MiB, "
            "tree PSS peak %.0f MiB",
            size,
            mem.driver_rss_before / MiB,
            mem.driver_rss / MiB,
            mem.jvm_heap / MiB,
            mem.tree_memory / MiB,
        )
        rows += [
            row(f"ours at N={size}: driver Python peak RSS", mem.driver_rss / MiB, None, "MiB"),
            row(
                f"ours at N={size}: driver Python RSS growth during the join",
                (mem.driver_rss - mem.driver_rss_before) / MiB,
                None,
                "MiB",
            ),
            row(f"ours at N={size}: JVM peak heap in use", mem.jvm_heap / MiB, None, "MiB"),
        ]
    return rows


def _measure_ours(ctx: Context, spark: Any, n: int) -> MemorySampler:
    """One run of our join over the ``n``-image inputs, its memory sampled."""
    scratch = ctx.work / f"join-mem-{n}"
    scratch.mkdir(parents=True, exist_ok=True)
    ours = _Ours(spark, ctx.inputs(n, f"join-inputs-n{n}"), scratch)
    with MemorySampler(spark) as mem:
        seconds = timed(ours)[1]
    log.info("join memory run at N=%d took %.2f s", n, seconds)
    shutil.rmtree(scratch, ignore_errors=True)
    return mem
