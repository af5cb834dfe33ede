"""The curation's pictures in a real browser: the thumbnails load on the asset pages.

The hard-case photos and documents are materialized through the CLI (``image_lance``,
``text_lance``, ``curation`` with a policy) into the test DAGSTER_HOME; headless Chromium
opens each asset page, opens the markdown entry the way a user does (its "[Show
Markdown]" link) and asserts that every thumbnail decoded: ``naturalWidth`` above zero,
and the captions the policy run should show.

``VLM_LAKE_UPDATE_SCREENSHOT=1`` also writes the excluded-images dialog to
``docs/curation-thumbnails.png`` (the README's picture).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env, hard_case_documents, hard_case_images, run_cli

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCREENSHOT = REPO / "docs" / "curation-thumbnails.png"
POLICY = {"min_blur": 50, "min_short_side": 64, "image_duplicates": "perceptual"}
LOAD_TIMEOUT_S = 30.0

# Every <img> of the open dialog: its alt text, natural width and whether it finished.
DIALOG_IMAGES_JS = """
const dialog = document.querySelector('[role=dialog]');
if (!dialog) { return null; }
return [...dialog.querySelectorAll('img')].map(i => [i.alt, i.naturalWidth, i.complete]);
"""


@pytest.fixture(scope="module")
def curated(dagster_home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The hard cases materialized through the CLI, with a policy, into DAGSTER_HOME."""
    root = tmp_path_factory.mktemp("thumbnails")
    raw = root / "raw"
    raw.mkdir()
    for name, data in hard_case_images().items():
        (raw / f"{name}.jpg").write_bytes(data)
    (root / "docs.json").write_text(json.dumps(hard_case_documents()))
    env = cli_env(
        dagster_home,
        RAW_IMAGES_URI=str(raw),
        RAW_TEXTS_URI=str(root / "docs.json"),
        LAKE_URI=str(root / "lake"),
    )
    config = json.dumps({"ops": {"curation": {"config": POLICY}}})
    args = [str(BIN / "dagster"), "asset", "materialize", "-m", "dagster_project.definitions"]
    args += ["--select", "image_lance,text_lance,curation", "--config-json", config]
    run_cli(args, env, REPO, timeout=300)


def _open_markdown(browser: Any, url: str, key: str) -> list[list[Any]]:
    """Open ``url``, click the "[Show Markdown]" of metadata ``key``; the dialog's images."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, LOAD_TIMEOUT_S, poll_frequency=0.25)
    row = wait.until(lambda d: d.find_elements(By.XPATH, f"//tr[td[normalize-space()='{key}']]"))[0]
    link = row.find_element(By.XPATH, ".//a[normalize-space()='[Show Markdown]']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()

    def loaded(driver: Any) -> list[list[Any]] | bool:
        images = driver.execute_script(DIALOG_IMAGES_JS)
        return images if images and all(done for _, _, done in images) else False

    return wait.until(loaded)


def test_excluded_images_and_clusters_show_as_thumbnails(
    curated: None, webserver: str, browser: Any, tmp_path: Path
) -> None:
    images = _open_markdown(browser, f"{webserver}/assets/curation", "excluded_images")
    time.sleep(0.5)  # the dialog's opening transition, for the picture
    shot = tmp_path / "curation-thumbnails.png"
    browser.save_screenshot(str(shot))
    broken = [alt for alt, width, _ in images if width <= 0]
    assert not broken, f"thumbnails that did not decode: {broken} (screenshot {shot})"
    alts = {alt for alt, _, _ in images}
    # min_blur: the 4 blurred-looking ones, with their blur; min_short_side: the 16x16 one
    assert {"flat_grey: 0", "tiny: 16", "blurred: 34"} <= alts, alts
    assert {a.split(":")[0] for a in alts} == {
        "almost_black",
        "blurred",
        "flat_grey",
        "tiny",
        "cropped",
        "original",
        "requality",
        "resized",
    }
    if os.environ.get("VLM_LAKE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
        log.info("wrote %s", SCREENSHOT)

    clusters = _open_markdown(browser, f"{webserver}/assets/image_lance", "largest_clusters")
    assert len(clusters) == 6 and all(width > 0 for _, width, _ in clusters), clusters
    assert clusters[0][0] == "kept: almost_black"  # the check's keep rule: no policy there
