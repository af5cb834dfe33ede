"""Run the whole pipeline through the Dagster CLI against a cluster, and check what it wrote."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lance
import numpy as np
import psutil
from helpers import sample_image_bytes

from vlm_lake.lake import SAMPLE_IMAGES_URI, SAMPLE_TEXTS_URI

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
#: The shipped samples: four images, four documents naming them.
SAMPLE_COUNTS = {"images": 4, "texts": 4, "multimodal": 4, "image_features": 4}
SAMPLE_INPUTS_PER_RECORD = [2, 2, 3, 1]


def pipeline_env(dagster_home: Path, lake: Path, **spark: str) -> dict[str, str]:
    """The CLI's environment: the shipped samples, a lake under ``lake``, and ``spark``.

    Inherited ``AWS_*``, ``RAW_*``, ``LAKE_*``, ``SPARK_*`` and ``PYSPARK_*`` variables are
    dropped so that only what the test sets reaches the run.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RAW_", "LAKE_", "SPARK_", "PYSPARK_"))
    }
    env.update(
        DAGSTER_HOME=str(dagster_home),
        RAW_IMAGES_URI=SAMPLE_IMAGES_URI,
        RAW_TEXTS_URI=SAMPLE_TEXTS_URI,
        LAKE_URI=str(lake),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,  # the executors' interpreter: this venv's
    )
    env.update(spark)
    return env


@dataclass
class RunResult:
    """What one CLI run printed, how long it took, and where its processes listened.

    Attributes:
        output: stdout and stderr of the CLI (also in ``dagster-cli.log`` under its cwd).
        seconds: Wall time of the run, Spark start included.
        listening: ``ip:port`` of every TCP socket that the CLI or any child of it (the
            Spark driver JVM, Python workers), or any watched server process or child of
            it (executors), listened on while the run went, sampled every half second.
        children: Executable names of the CLI's descendants (``java`` when it started a
            Spark driver JVM of its own), sampled the same way.
    """

    output: str
    seconds: float
    listening: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(procs: list[psutil.Process]) -> set[str]:
    """``ip:port`` of the listening TCP sockets of ``procs``."""
    found: set[str] = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN}
    return found


def _names(procs: list[psutil.Process]) -> set[str]:
    names: set[str] = set()
    for proc in procs:
        try:
            names.add(proc.name())
        except psutil.NoSuchProcess:
            continue
    return names


def materialize_all(
    env: dict[str, str],
    cwd: Path,
    watch: Iterable[int] = (),
    timeout_s: float = 400,
    config: dict[str, Any] | None = None,
) -> RunResult:
    """``dagster asset materialize --select '*'``, watched until it exits.

    Args:
        env: The CLI's environment (see :func:`pipeline_env`).
        cwd: Where it runs; its output goes to ``cwd/dagster-cli.log``.
        watch: Server pids whose (and whose children's) listening sockets are recorded too.
        timeout_s: Seconds the run may take.
        config: Run config (``--config-json``), e.g. the image ingest's ``engine``.

    Raises:
        AssertionError: The CLI failed or ran past ``timeout_s`` (with its output's tail).
    """
    args = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "dagster_project.definitions",
        "--select",
        "*",
    ]
    if config is not None:
        args += ["--config-json", json.dumps(config)]
    log_path = cwd / "dagster-cli.log"
    watched = tuple(watch)
    listening: set[str] = set()
    children: set[str] = set()
    started = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout ends its JVM too
        )
        try:
            while proc.poll() is None:
                cli = _process_tree(proc.pid)
                children |= _names(cli[1:])
                listening |= _listening(cli)
                for pid in watched:
                    listening |= _listening(_process_tree(pid))
                if time.monotonic() - started > timeout_s:
                    raise AssertionError(
                        f"{args} ran past {timeout_s:.0f} s (allowed: {timeout_s:.0f} s):\n"
                        f"{log_path.read_text(errors='replace')[-8000:]}"
                    )
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    assert proc.returncode == 0, f"{args} failed (exit {proc.returncode}):\n{output[-12000:]}"
    return RunResult(output, seconds, listening, children)


def assert_loopback_only(listening: set[str]) -> None:
    """Every listening socket seen was on 127.0.0.1 (IPv4, or IPv4-mapped IPv6)."""
    assert listening, "no listening socket was seen: the watch did not see the driver"
    elsewhere = {
        a for a in listening if a.rsplit(":", 1)[0] not in ("127.0.0.1", "::ffff:127.0.0.1")
    }
    assert not elsewhere, f"listening outside 127.0.0.1: {sorted(elsewhere)}"


def assert_lake_outputs(lake: Path) -> None:
    """Row counts of the four Lance datasets and the training JSON match the shipped samples."""
    for name, rows in SAMPLE_COUNTS.items():
        ds = lance.dataset(str(lake / f"{name}.lance"))
        assert ds.count_rows() == rows, (name, ds.count_rows())
    records = json.loads((lake / "training_data.json").read_text())
    assert [len(r["input"]) for r in records] == SAMPLE_INPUTS_PER_RECORD
    assert all(r["output"] == "" and r["instruction"] for r in records)
    # The images travel intact and in the document's order: doc_003 names image2, 1, 3.
    assert records[2]["instruction"] == "Interesting dialogue about images."
    assert [bytes.fromhex(h) for h in records[2]["input"]] == [
        sample_image_bytes(f"image{i}.jpg") for i in (2, 1, 3)
    ]


def task_threads(output: str) -> int:
    """The torch threads per task that the feature step chose, from its log line."""
    found = re.findall(
        r"running \d+ images as \d+ tasks on \d+ slots x (\d+) torch threads", output
    )
    assert len(found) == 1, f"expected one feature-task line in the run's output, got {found}"
    return int(found[0])


def assert_features_match_reference(lake: Path, threads: int) -> None:
    """The stored features equal, bit for bit, the same images' features computed without Spark.

    The reference (``reference_features.py``, in a fresh process) uses the same seed-0
    weights, precision, preprocessing and torch thread count as the Spark task. The thread
    count matters: it changes the order of float32 sums, so the last bits.
    """
    table = lance.dataset(str(lake / "image_features.lance")).to_table()
    stored = dict(
        zip(table.column("image_id").to_pylist(), table.column("features").to_pylist(), strict=True)
    )
    (precision,) = set(table.column("precision").to_pylist())
    (identity,) = set(table.column("weights").to_pylist())
    assert identity == "random-init:seed=0", identity
    out = lake.parent / "reference_features.npz"
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "reference_features.py"),
            str(lake),
            str(threads),
            precision,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as reference:
        assert set(stored) == set(reference.files) == {"image1", "image2", "image3", "image4"}
        for image_id, vector in stored.items():
            np.testing.assert_array_equal(
                np.asarray(vector, dtype=np.float32), reference[image_id], err_msg=image_id
            )
