"""Helpers for the sensor tests: one evaluation, the expected selection, S3 request log."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

IMAGES_PREFIX = "lanceData/"
TEXTS_KEY = "Lance/data/testdata.json"


def seed_layout_resources(
    bucket: str, object_store: Any, upload_events: Any = None
) -> dict[str, Any]:
    """The sensor's resources for the seed's layout in ``bucket`` (no queue by default)."""
    from resources import LakeResource, UploadEventsResource

    return {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/{IMAGES_PREFIX}",
            raw_texts_uri=f"s3://{bucket}/{TEXTS_KEY}",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": object_store,
        "upload_events": upload_events or UploadEventsResource(),
    }


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class S3Request:
    """One request line the moto server logged."""

    method: str
    path: str
    query: dict[str, list[str]]


@contextlib.contextmanager
def recorded_s3_requests() -> Iterator[list[S3Request]]:
    """Record every request the moto server handles (werkzeug logs each request line).

    The session conftest keeps the ``werkzeug`` logger at WARNING; this lowers it to INFO
    with a handler of its own for the duration of the block, then restores it.
    """
    logger = logging.getLogger("werkzeug")
    requests: list[S3Request] = []

    class _Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.args or not isinstance(record.args, tuple):
                return
            line = _ANSI.sub("", str(record.args[0])).split()
            if len(line) >= 2:
                target = urlsplit(line[1])
                requests.append(S3Request(line[0], target.path, parse_qs(target.query)))

    handler = _Recorder(level=logging.INFO)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep 5,000 request lines out of pytest's log capture
    try:
        yield requests
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def seed_objects(bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Store many objects in the test S3 server's own state, without one HTTP PUT each.

    The moto server runs in this process and keeps its buckets in ``s3_backends``; storing
    through the backend gives the same objects, sizes and ETags (MD5) as ``PutObject`` does,
    in about 0.1 ms each instead of 6 ms (the single-process server, not the client, is the
    bottleneck of HTTP uploads). Listing and everything under test still go over HTTP.
    """
    from moto.s3.models import s3_backends

    backends = [
        backend
        for by_partition in s3_backends.values()
        for backend in by_partition.values()
        if bucket in backend.buckets
    ]
    assert len(backends) == 1, f"bucket {bucket!r} not found in the moto server's state"
    for key, data in objects:
        backends[0].put_object(bucket, key, data)
