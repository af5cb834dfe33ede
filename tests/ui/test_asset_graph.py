"""The Dagster UI in a real browser: every asset and every lineage edge is on the graph.

Starts ``dagster-webserver`` on 127.0.0.1 against ``workspace.yaml``, opens the global asset
lineage page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, installed by
``scripts/install_browser.sh``) and compares what the page draws with the Definitions.

The expected graph comes from ``dagster_project.definitions.defs``, never from a list here.
The page gives its nodes and edges no ids, so they are read the way a person reads them:
each node is an SVG ``<foreignObject>`` whose text names the asset, each edge an SVG
``<path>`` with an arrow marker; an edge's two ends are matched to the node boxes they touch
(start on the upstream node's border, arrow tip a few pixels before the downstream node).

``VLM_LAKE_UPDATE_SCREENSHOT=1`` also writes the screenshot to ``docs/asset-graph.png``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "asset-graph.png"
GRAPH_RENDER_TIMEOUT_S = 30.0
# An edge ends on a node's border (start) or a few pixels before it (arrow tip); nodes are
# at least ~60 px apart, so an end further than this from every node is not one of ours.
EDGE_END_TOLERANCE_PX = 20.0

# Reads the lineage SVG: node boxes with their texts, and each edge's path data.
READ_GRAPH_JS = """
const svg = [...document.querySelectorAll('svg')].find(s => s.querySelector('foreignObject'));
if (!svg) { return {nodes: [], edges: []}; }
const nodes = [...svg.querySelectorAll('foreignObject')].map(fo => {
  const labels = new Set();
  for (const el of fo.querySelectorAll('*')) {
    if (el.dataset.tooltip) { labels.add(el.dataset.tooltip.trim()); }
    const own = [...el.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)
      .map(n => n.textContent).join('').trim();
    if (own) { labels.add(own); }
  }
  return {
    x: parseFloat(fo.getAttribute('x')), y: parseFloat(fo.getAttribute('y')),
    w: parseFloat(fo.getAttribute('width')), h: parseFloat(fo.getAttribute('height')),
    labels: [...labels],
  };
});
const edges = [...svg.querySelectorAll('path[marker-end]')]
  .filter(p => !p.closest('marker')).map(p => p.getAttribute('d'));
return {nodes: nodes, edges: edges};
"""


@dataclass(frozen=True)
class Box:
    """A node's box in the lineage SVG's coordinates."""

    x: float
    y: float
    w: float
    h: float

    def distance(self, px: float, py: float) -> float:
        """Distance from a point to this box (0 inside it)."""
        dx = max(self.x - px, 0.0, px - (self.x + self.w))
        dy = max(self.y - py, 0.0, py - (self.y + self.h))
        return math.hypot(dx, dy)


def _expected_graph() -> tuple[dict[str, str], set[tuple[str, str]]]:
    """The graph the UI should draw, from the code location's Definitions.

    Returns:
        ``{label: asset key}``, the label being what a node shows (the key's last part),
        and the set of ``(upstream, downstream)`` asset keys as user strings.
    """
    from dagster_project.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    labels: dict[str, str] = {}
    for key in keys:
        label = key.path[-1]
        assert label not in labels, f"two assets show as {label!r}: {labels[label]}, {key}"
        labels[label] = key.to_user_string()
    edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in keys
        for parent in graph.get(key).parent_keys
        if parent != key and parent in graph.get_all_asset_keys()
    }
    return labels, edges


def _match_edges(
    rendered: dict[str, Any], labels: dict[str, str]
) -> tuple[dict[str, Box], list[tuple[str, str]], list[str]]:
    """Map the rendered SVG to asset keys.

    Args:
        rendered: ``READ_GRAPH_JS``'s result.
        labels: ``{label: asset key}`` of the expected assets.

    Returns:
        The node box of each asset key found, the ``(upstream, downstream)`` pair of each
        edge path, and a description of every edge end that touches no asset node.
    """
    boxes: dict[str, Box] = {}
    for node in rendered["nodes"]:
        for label in node["labels"]:
            if label in labels:
                key = labels[label]
                assert key not in boxes, f"asset {key} is drawn twice"
                boxes[key] = Box(node["x"], node["y"], node["w"], node["h"])

    def nearest(px: float, py: float) -> str | None:
        dist, key = min(((b.distance(px, py), k) for k, b in boxes.items()), default=(0, None))
        return key if dist <= EDGE_END_TOLERANCE_PX else None

    pairs: list[tuple[str, str]] = []
    stray: list[str] = []
    for d in rendered["edges"]:
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", d)]
        up, down = nearest(nums[0], nums[1]), nearest(nums[-2], nums[-1])
        if up is None or down is None:
            stray.append(d)
        else:
            pairs.append((up, down))
    return boxes, pairs, stray


def _settle(driver: Any, timeout_s: float = 10.0) -> None:
    """Best effort, for the picture: wait until no node still says "Loading..."."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = driver.execute_script(READ_GRAPH_JS)["nodes"]
        if not any(label.startswith("Loading") for n in nodes for label in n["labels"]):
            break
        time.sleep(0.25)
    time.sleep(0.5)  # the zoom-to-fit transition


def test_asset_graph_shows_every_asset_and_edge(
    webserver: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    labels, expected_edges = _expected_graph()
    assert labels, "the Definitions have no assets"

    browser.get(f"{webserver}/asset-groups")  # "Global asset lineage": every asset, one graph

    def drawn(driver: Any) -> dict[str, Any] | bool:
        rendered = driver.execute_script(READ_GRAPH_JS)
        boxes, pairs, _ = _match_edges(rendered, labels)
        done = len(boxes) == len(labels) and len(pairs) >= len(expected_edges)
        return rendered if done else False

    try:
        rendered = WebDriverWait(browser, GRAPH_RENDER_TIMEOUT_S, poll_frequency=0.25).until(drawn)
    except TimeoutException:
        rendered = browser.execute_script(READ_GRAPH_JS)
    _settle(browser)
    shot = tmp_path / "asset-graph.png"
    browser.save_screenshot(str(shot))

    boxes, pairs, stray = _match_edges(rendered, labels)
    where = f"(page {browser.current_url!r}, title {browser.title!r}, screenshot {shot})"
    missing = sorted(set(labels.values()) - boxes.keys())
    assert not missing, f"assets not drawn as nodes: {missing} {where}"
    assert not stray, f"edges that join no two asset nodes: {stray} {where}"
    assert set(pairs) == expected_edges, (
        f"edges drawn {sorted(set(pairs))} != expected {sorted(expected_edges)} {where}"
    )
    assert len(pairs) == len(expected_edges), f"some edges drawn twice: {sorted(pairs)} {where}"

    if os.environ.get("VLM_LAKE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
        log.info("wrote %s", SCREENSHOT)
