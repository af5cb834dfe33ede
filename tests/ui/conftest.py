"""UI-tier fixtures: ``dagster-webserver`` on 127.0.0.1 and headless Chromium.

The webserver serves ``workspace.yaml`` with the test session's DAGSTER_HOME; the browser is
Debian's ``chromium`` driven by Debian's ``chromium-driver`` (installed by
``scripts/install_browser.sh``), with every host but 127.0.0.1 unresolvable.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INSTALL_HINT = "run `bash scripts/install_browser.sh` (apt-get install chromium chromium-driver)"
SERVER_START_TIMEOUT_S = 60.0
WINDOW = (1600, 1000)

# Everything the browser does stays on 127.0.0.1: no sync, updates, metrics or DNS.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no output>"


@pytest.fixture(scope="session")
def webserver(dagster_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dagster-webserver`` on 127.0.0.1 with the test DAGSTER_HOME; yields its base URL."""
    # The "Join the Dagster community" dialog shows on a fresh instance served from
    # 127.0.0.1; mark it seen, as dismissing it in the UI does, so it hides nothing.
    nux = dagster_home / ".nux" / "nux.yaml"
    nux.parent.mkdir(parents=True, exist_ok=True)
    nux.write_text("seen: 1\n")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("webserver") / "webserver.log"
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), SPARK_LOCAL_IP="127.0.0.1")
    args = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    args += ["-w", "workspace.yaml"]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server is in the same group: stop both
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer {url}/server_info within "
                    f"{SERVER_START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the webserver's process group: SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("dagster-webserver ignored SIGTERM; killing it")
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still alive
    except ProcessLookupError:
        pass
    proc.wait(timeout=15)


@pytest.fixture()
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian Chromium driven by Debian's chromedriver, both named explicitly."""
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    assert chromium and chromedriver, f"chromium/chromedriver not on PATH: {INSTALL_HINT}"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        pytest.fail(f"selenium is missing ({exc}): pip install -e '.[dev]'")

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium never phones home
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with Service's path: Selenium Manager never runs
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        # --window-size includes the (invisible) browser frame: pin the page's viewport too.
        width, height = WINDOW
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        yield driver
    finally:
        driver.quit()
