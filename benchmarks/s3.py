"""An S3 server for the benchmarks: moto's server mode over HTTP on 127.0.0.1.

By default moto runs in a child process of its own (``python -m moto.server``), as a real
object store would: in this process its request threads would share the client's GIL and
each side would slow the other down in a way no real server does. moto keeps every object
in memory and serves it from a Python (werkzeug) thread per request, so it is much slower
than a real object store; whatever reads from it, ours or a plain boto3 loop, meets the
same server.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vlm_lake.store.object_store import ObjectStore, StoreSettings

log = logging.getLogger("benchmarks.s3")

#: Credentials and region of the test server (moto accepts any).
ACCESS_KEY = "bench-access-key-id"
SECRET_KEY = "bench-secret-access-key"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(*, in_process: bool = False, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (a free port) for the duration of the block.

    Args:
        in_process: Serve from threads of this process (``ThreadedMotoServer``) instead of
            a child process.
        start_timeout_s: How long to wait for the child process to accept connections.

    Yields:
        The endpoint URL, ``http://127.0.0.1:<port>``.

    Raises:
        RuntimeError: The child process exited or did not listen within the timeout.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if in_process:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        log.info("moto S3 server (in this process) on %s", endpoint)
        try:
            yield endpoint
        finally:
            server.stop()
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(proc, port, start_timeout_s)
        log.info("moto S3 server (process %d) on %s", proc.pid, endpoint)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the moto server (port {port}) exited with code {proc.returncode} at start"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the moto server did not listen on 127.0.0.1:{port} in {timeout_s} s")


def settings(endpoint: str, *, max_pool_connections: int = 32) -> StoreSettings:
    """Store settings for the moto server at ``endpoint``."""
    return StoreSettings(
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        max_pool_connections=max_pool_connections,
    )


def upload(
    store: ObjectStore, bucket: str, prefix: str, paths: Sequence[Path], workers: int = 16
) -> int:
    """Create ``bucket`` and upload ``paths`` as ``prefix/<name>``, in parallel.

    Returns:
        The bytes uploaded.
    """
    client = store.client
    client.create_bucket(Bucket=bucket)

    def put(path: Path) -> int:
        data = path.read_bytes()
        client.put_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{path.name}", Body=data)
        return len(data)

    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(put, paths))
    log.info("uploaded %d objects (%.0f MB) to s3://%s/%s", len(paths), total / 1e6, bucket, prefix)
    return total
