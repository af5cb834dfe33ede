"""Real Spark servers on 127.0.0.1: a standalone master with two workers, a Connect server.

Both are started with the scripts pyspark ships (``bin/spark-class``,
``sbin/start-connect-server.sh``), exactly as an operator would start them, and stopped when
the module's tests are done. Each fixture waits for its server to be ready within a time
limit and, when it is not, fails with the tail of the server's log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyspark
import pytest
from helpers import free_port

log = logging.getLogger(__name__)

SPARK_HOME = Path(pyspark.__file__).resolve().parent
#: Seconds a server may take to become ready (JVM start on 2 busy cores included).
READY_TIMEOUT_S = 120.0
WORKERS = 2


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a server log (or a note that there is none yet)."""
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return f"--- last {min(lines, len(text))} lines of {path} ---\n" + "\n".join(text[-lines:])


def server_env(root: Path) -> dict[str, str]:
    """The environment of a Spark server process: loopback only, the venv's Python.

    ``SPARK_CONF_DIR`` points at an empty folder so that no ``spark-defaults.conf`` or
    ``spark-env.sh`` of the machine changes what the tests start.
    """
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOCAL_HOSTNAME="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
    )
    return env


def wait_until(
    ready: Callable[[], bool],
    what: str,
    log_path: Path,
    process: subprocess.Popen[bytes] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> float:
    """Poll ``ready`` every half second; return the seconds it took.

    Raises:
        RuntimeError: ``process`` exited before ``ready`` held, with the log's tail.
        TimeoutError: ``ready`` did not hold within ``timeout_s``, with the log's tail.
    """
    started = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - started
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what}: the process exited with code {process.returncode} before it was "
                f"ready\n{log_tail(log_path)}"
            )
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(
                f"{what}: not ready after {timeout_s:.0f} s (allowed: {timeout_s:.0f} s)\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(0.5)


def get_json(url: str) -> Any | None:
    """GET ``url`` and parse it as JSON; None while the server does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (127.0.0.1 only)
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], what: str, grace_s: float = 20.0) -> None:
    """SIGTERM the process we started (and its process group), SIGKILL after ``grace_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s; killing it", what, process.pid, grace_s
            )
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace_s)
    # What is left in the group: a worker's executors (its children) if it died first.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class StandaloneCluster:
    """A running standalone master and its workers.

    Attributes:
        master_url: ``spark://127.0.0.1:<port>``, the value of ``SPARK_MASTER``.
        webui_url: The master's web UI; ``<webui_url>/json/`` is its state as JSON.
        work_dirs: One work dir per worker: ``app-*/<executor id>/`` holds each executor's
            stdout and stderr.
        logs: Log file of each server process (master first).
    """

    master_url: str
    webui_url: str
    work_dirs: list[Path]
    logs: list[Path]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def state(self) -> dict[str, Any]:
        """The master's state (workers, active and completed applications)."""
        state = get_json(f"{self.webui_url}/json/")
        if state is None:
            raise RuntimeError(
                f"the master at {self.webui_url} does not answer\n{log_tail(self.logs[0])}"
            )
        return state


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so teardown ends all of it
        )


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A standalone master and two 1-core workers on 127.0.0.1, started with spark-class."""
    root = tmp_path_factory.mktemp("standalone")
    env = server_env(root)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, webui_port = free_port(), free_port()
    cluster = StandaloneCluster(
        master_url=f"spark://127.0.0.1:{port}",
        webui_url=f"http://127.0.0.1:{webui_port}",
        work_dirs=[],
        logs=[root / "master.log"],
    )
    try:
        cluster.processes.append(
            _spawn(
                [
                    spark_class,
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--webui-port",
                    str(webui_port),
                ],
                env,
                cluster.logs[0],
            )
        )
        took = wait_until(
            lambda: (get_json(f"{cluster.webui_url}/json/") or {}).get("status") == "ALIVE",
            "the standalone master",
            cluster.logs[0],
            cluster.processes[0],
        )
        log.info("standalone master up in %.1f s", took)
        for i in range(WORKERS):
            work_dir = root / f"worker{i}"
            work_dir.mkdir()
            cluster.work_dirs.append(work_dir)
            cluster.logs.append(root / f"worker{i}.log")
            cluster.processes.append(
                _spawn(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "2g",
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(work_dir),
                        cluster.master_url,
                    ],
                    env,
                    cluster.logs[-1],
                )
            )

        def workers_alive() -> bool:
            for process, log_path in zip(cluster.processes[1:], cluster.logs[1:], strict=True):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"a standalone worker exited with code {process.returncode} before it "
                        f"registered\n{log_tail(log_path)}"
                    )
            return (get_json(f"{cluster.webui_url}/json/") or {}).get("aliveworkers") == WORKERS

        took = wait_until(workers_alive, f"{WORKERS} standalone workers", cluster.logs[1])
        log.info("%d standalone workers registered in %.1f s", WORKERS, took)
        yield cluster
    finally:
        for process in reversed(cluster.processes):
            stop_process(process, "standalone server")


@dataclass
class ConnectServer:
    """A running Spark Connect server.

    Attributes:
        remote: ``sc://127.0.0.1:<port>``, the value of ``SPARK_REMOTE``.
        log: The server's log (the daemon's ``.out`` file).
        pid: The server's JVM.
    """

    remote: str
    log: Path
    pid: int


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    """A Spark Connect server (``local[2]`` inside) on 127.0.0.1, started with its sbin script."""
    root = tmp_path_factory.mktemp("connect")
    env = server_env(root)
    env.update(SPARK_LOG_DIR=str(root / "logs"), SPARK_PID_DIR=str(root / "pids"))
    port = free_port()
    start = [
        "bash",
        str(SPARK_HOME / "sbin" / "start-connect-server.sh"),
        "--master",
        "local[2]",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=60)
    pid_files = list((root / "pids").glob("*.pid"))
    assert len(pid_files) == 1, f"expected one pid file in {root / 'pids'}, got {pid_files}"
    pid = int(pid_files[0].read_text().strip())
    logs = list((root / "logs").glob("*.out"))
    assert len(logs) == 1, f"expected one server log in {root / 'logs'}, got {logs}"
    server = ConnectServer(remote=f"sc://127.0.0.1:{port}", log=logs[0], pid=pid)

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError as exc:
            raise RuntimeError(
                f"the Spark Connect server (pid {pid}) exited before it was ready\n"
                f"{log_tail(server.log)}"
            ) from exc
        return port_open(port)

    try:
        took = wait_until(alive, f"the Spark Connect server on port {port}", server.log)
        log.info("Spark Connect server up in %.1f s", took)
        yield server
    finally:
        stop = subprocess.run(
            ["bash", str(SPARK_HOME / "sbin" / "stop-connect-server.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            log.warning(
                "stop-connect-server.sh left pid %d running (%s); killing it",
                pid,
                (stop.stdout + stop.stderr).strip(),
            )
            os.kill(pid, signal.SIGKILL)
