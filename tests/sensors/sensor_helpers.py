"""Helpers for the sensor tests: one evaluation, the expected selection, S3 request log."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers import (  # noqa: F401  (shared with the other tiers)
    S3Request,
    recorded_s3_requests,
    seed_layout_resources,
    seed_objects,
)

IMAGES_PREFIX = "lanceData/"
TEXTS_KEY = "Lance/data/testdata.json"


@dataclass(frozen=True)
class Tick:
    """What one evaluation of the sensor returned."""

    run_requests: list[Any]
    cursor: str | None
    skip_message: str | None

    @property
    def run(self) -> Any:
        assert len(self.run_requests) == 1, f"expected one run request, got {self}"
        return self.run_requests[0]

    @property
    def selected(self) -> set[str]:
        return {key.to_user_string() for key in self.run.asset_selection}

    @property
    def cursor_data(self) -> dict[str, Any]:
        assert self.cursor is not None
        return json.loads(self.cursor)


@functools.cache
def _ephemeral_instance() -> Any:
    from dagster import DagsterInstance

    return DagsterInstance.ephemeral()


def evaluate(cursor: str | None, resources: dict[str, Any], instance: Any = None) -> Tick:
    """Evaluate the registered sensor once, as the daemon does (``evaluate_tick``).

    Without ``instance`` it shares one in-memory instance (creating one per tick costs
    about 0.3 s); the sensor keeps all its state in the cursor.
    """
    from dagster import build_sensor_context

    from dagster_project.definitions import defs

    sensor = defs.resolve_sensor_def("new_uploads_sensor")
    with build_sensor_context(
        instance=instance or _ephemeral_instance(),
        cursor=cursor,
        resources=resources,
        definitions=defs,
    ) as context:
        data = sensor.evaluate_tick(context)
    return Tick(list(data.run_requests or []), data.cursor, data.skip_message)


def expected_selection(graph: Any, roots: Iterable[str]) -> set[str]:
    """Walk the asset graph by hand: roots, their children, and non-subsettable siblings."""
    from dagster import AssetKey

    todo = [AssetKey(r) for r in roots]
    seen: set[Any] = set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        node = graph.get(key)
        todo.extend(node.child_keys)
        if not node.assets_def.can_subset:
            todo.extend(node.assets_def.keys)
    return {k.to_user_string() for k in seen}
