"""Growth: wall time and peak memory of a full materialization as the data set grows.

Each size runs in a fresh process, exactly as a user's run would: ``dagster.materialize``
of the code location's assets with the resources built from the environment (local
folders, ``local[*]`` Spark), so JVM start-up and Python worker start-up are included.
Peak memory is that of the whole process tree (the Python driver, the Spark JVM and Spark's
Python workers), as proportional set size (shared pages split between the processes sharing
them: see ``benchmarks.common.tree_memory``), sampled every 0.1 s from outside.

Two things make the small size special, so linearity and flatness are read between the two
larger sizes: a fixed cost of about 25 s per run (JVM, Python workers, Dagster), and memory
that grows with the work done until it levels off (Spark's Python workers keep each task's
allocator peak, the JVM grows its heap lazily): +35% from 1k to 10k images, +5% from 10k
to 50k in the default run.

``image_features`` is left out: ResNet-50 runs at a fixed ~15 images/s on these two cores
(``python -m benchmarks.features``), so it is linear by construction and would take an hour
at 50k; every other asset and check is materialized.

Sizes: N/20, N/2 and 5N/2 images (1k, 10k and 50k at the default N=20000), with N/2
documents each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Context, PeakMemory, Row, row

log = logging.getLogger(__name__)

#: Assets the growth run leaves out, and why (see the module docstring).
SKIPPED = ("image_features",)


def sizes(n: int) -> list[int]:
    """The data set sizes measured for a main size ``n``."""
    return [max(100, n // 20), n // 2, n * 5 // 2]


def _materialize(lake: str) -> None:
    """Child process: materialize every asset but :data:`SKIPPED`; print a JSON summary."""
    from dagster import materialize

    from assets import ALL_ASSETS
    from dagster_project.settings import build_resources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    selected = [a for a in ALL_ASSETS if not set(SKIPPED) & {k.path[-1] for k in a.keys}]
    started = time.perf_counter()
    result = materialize(selected, resources=build_resources())
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"materialization of {lake} failed")
    counts = {
        e.asset_key.to_user_string(): e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
        if "dagster/row_count" in e.materialization.metadata
    }
    sys.stdout.write(json.dumps({"seconds": seconds, "rows": counts}) + "\n")


def _run_one(
    images: Path, texts: Path, lake: Path, logfile: Path
) -> tuple[float, float, int, dict[str, int]]:
    """Materialize in a child process; return (wall s, in-run s, peak tree PSS, row counts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPARK_", "RAW_"))}
    env.update(
        RAW_IMAGES_URI=str(images),
        RAW_TEXTS_URI=str(texts),
        LAKE_URI=str(lake),
        SPARK_MASTER="local[*]",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    started = time.perf_counter()
    with logfile.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.growth", str(lake)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        with PeakMemory(pid=proc.pid) as peak:
            out, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = logfile.read_text()[-4000:]
        raise RuntimeError(f"growth run on {images} failed (exit {proc.returncode}):\n{tail}")
    summary = json.loads(out.strip().splitlines()[-1])
    return wall, summary["seconds"], peak.peak, summary["rows"]


def run(ctx: Context) -> list[Row]:
    """Materialize at each of :func:`sizes` and report time and memory growth."""
    results = []
    for n in sizes(ctx.n):
        data = ctx.data(n)
        lake = ctx.work / f"growth-n{n}"
        log_file = lake.with_suffix(".log")
        wall, inner, peak, counts = _run_one(data.images, data.texts, lake, log_file)
        log.info(
            "growth n=%d: %.1f s wall (%.1f s in the run), peak %.0f MiB, rows %s",
            n,
            wall,
            inner,
            peak / 2**20,
            counts,
        )
        if counts.get("image_lance") != n:
            raise RuntimeError(f"growth n={n}: image_lance has {counts.get('image_lance')} rows")
        results.append((n, wall, inner, peak))
    rows: list[Row] = []
    for n, wall, inner, peak in results:
        name = f"growth n={n}:"
        rows.append(row(f"{name} full materialization w/o features, process wall", wall, None, "s"))
        rows.append(row(f"{name} the same, inside the run (no process start)", inner, None, "s"))
        rows.append(row(f"{name} peak memory (PSS), whole process tree", peak / 2**20, None, "MiB"))
    (small, _, t_small, m_small), (mid, _, t_mid, m_mid), (big, _, t_big, m_big) = results
    rows += [
        row(
            f"growth: marginal run time per 1k images, n={mid}->{big} vs n={small}->{mid} "
            "(1.0 = linear)",
            (t_big - t_mid) / (big - mid) * 1000,
            (t_mid - t_small) / (mid - small) * 1000,
            "s per 1k images",
            higher=False,
        ),
        row(
            f"growth: run time per 1k images at n={big} vs n={mid} (fixed cost included)",
            t_big / big * 1000,
            t_mid / mid * 1000,
            "s per 1k images",
            higher=False,
        ),
        row(
            f"growth: peak memory at n={big} vs n={mid} (1.0 = flat)",
            m_big / 2**20,
            m_mid / 2**20,
            "MiB",
            higher=False,
        ),
        row(
            f"growth: peak memory at n={big} vs n={small}",
            m_big / 2**20,
            m_small / 2**20,
            "MiB",
            higher=False,
        ),
    ]
    for n, *_ in results:
        shutil.rmtree(ctx.work / f"growth-n{n}", ignore_errors=True)
    return rows


if __name__ == "__main__":
    _materialize(sys.argv[1])
