"""Sensors: start the pipeline when the raw uploads change.

``new_uploads_sensor`` ticks every ``UPLOAD_SENSOR_INTERVAL_SECONDS`` (default 60). It
learns of changes from the upload-event queue (``UPLOAD_EVENTS_QUEUE_URL``), and from
sweeps that list each source a bounded slice per tick and fingerprint every complete
round (:mod:`vlm_lake.ingest.source_sweep`); no object is ever read. A change requests
one run of the changed source's ingest asset and everything downstream of it. The whole
design is in docs/operations.md.
"""

# No `from __future__ import annotations` here: Dagster finds a sensor's context and resource
# parameters by their annotations, checked by identity, and a string annotation fails that.

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    RepositoryDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from dagster_project.settings import UPLOAD_SENSOR_INTERVAL_ENV, upload_sensor_interval_seconds
from dagster_project.upload_cursor import SENSOR_NAME, UploadsCursor
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.upload_events import UploadEventsResource
from vlm_lake.ingest.source_sweep import SourceRound, sweep
from vlm_lake.ingest.upload_events import EventQueue, UploadEvent
from vlm_lake.store.object_store import ObjectStore

#: The job the sensor's runs belong to (defined in ``dagster_project/definitions.py``).
JOB_NAME = "vlm_lake_job"
TAG_PREFIX = "vlm_lake"


@dataclass(frozen=True)
class UploadSource:
    """One watched source, the ingest asset that reads it and its quarantine table.

    A run for a changed source materializes both: the ingest records the rejections.
    """

    name: str
    env_var: str
    ingest_asset: AssetKey
    quarantine_asset: AssetKey


IMAGES = UploadSource(
    "images", "RAW_IMAGES_URI", AssetKey("image_lance"), AssetKey("rejected_images")
)
TEXTS = UploadSource(
    "texts", "RAW_TEXTS_URI", AssetKey("text_lance"), AssetKey("rejected_documents")
)
SOURCES: tuple[UploadSource, ...] = (IMAGES, TEXTS)


def downstream_selection(
    repository: RepositoryDefinition, roots: Iterable[AssetKey]
) -> list[AssetKey]:
    """``roots``, everything downstream of them, and the multi-asset outputs they require.

    Computed from the asset graph, so new downstream assets and multi-assets (an ingest that
    also writes a quarantine table) are picked up without listing them here.

    Args:
        repository: The code location (``defs.get_repository_def()``, or a sensor
            context's ``repository_def``), whose asset graph is searched.
        roots: The ingest asset keys whose sources changed.

    Returns:
        The selected asset keys, sorted.
    """
    base = AssetSelection.assets(*roots).required_multi_asset_neighbors()
    selection = base.downstream().required_multi_asset_neighbors()
    return sorted(selection.resolve(repository.asset_graph), key=lambda key: key.to_user_string())


@dataclass
class _Tick:
    """What one tick found: events from the queue, rounds the sweep completed."""

    cursor: UploadsCursor
    uris: dict[str, str] = field(default_factory=dict)
    events: dict[str, list[UploadEvent]] = field(default_factory=dict)
    rounds: dict[str, SourceRound] = field(default_factory=dict)
    receipts: list[str] = field(default_factory=list)
    list_calls: int = 0
    notes: list[str] = field(default_factory=list)
    keep_messages: bool = False

    def changed(self) -> list[UploadSource]:
        """Sources with new events, or whose completed round differs from the last one.

        Until every source has completed a round, sweeps request nothing (a first run
        needs both sources); the first run then takes both.
        """
        by_events = [s for s in SOURCES if self.events.get(s.name)]
        if any(s.name not in self.rounds and not self.cursor.fingerprint(s.name) for s in SOURCES):
            return by_events
        if self.cursor.generation == 0:
            return list(SOURCES)
        return [
            s
            for s in SOURCES
            if s in by_events
            or (
                s.name in self.rounds
                and self.cursor.fingerprint(s.name) != self.rounds[s.name].fingerprint
            )
        ]


def _receive(tick: _Tick, queue: EventQueue, budget: UploadEventsResource, deadline: float) -> None:
    """Read the queue; keep the events under a source that this sensor has not seen."""
    got = queue.receive(budget.max_messages_per_tick, deadline)
    tick.receipts = got.receipts
    seen = set(tick.cursor.seen)
    fresh = [e for e in got.events if e.id not in seen]
    ids = list(dict.fromkeys(e.id for e in fresh))
    tick.cursor = tick.cursor.remember(ids)
    for s in SOURCES:
        uri = tick.uris[s.name]
        matched = [e for e in fresh if e.under(uri)]
        if matched:
            tick.events[s.name] = matched
    tick.notes.append(
        f"queue: {len(got.receipts)} messages, {len(got.events)} events "
        f"({len(got.events) - len(fresh)} seen before, {got.ignored} messages ignored)"
    )


def _sweep(tick: _Tick, store: ObjectStore, budget: UploadEventsResource, deadline: float) -> None:
    """Advance each source's sweep by a slice; record the rounds that completed."""
    sweeps = dict(tick.cursor.sweeps)
    for s in SOURCES:
        step = sweep(
            store,
            tick.uris[s.name],
            sweeps.get(s.name),
            max_pages=budget.max_list_pages_per_tick,
            deadline=deadline,
            name=s.env_var,
        )
        tick.list_calls += step.list_calls
        if step.completed is None:
            sweeps[s.name] = step.state
            tick.notes.append(f"{s.env_var}: sweep at {step.state.objects} objects, goes on")
            continue
        sweeps.pop(s.name, None)
        tick.rounds[s.name] = step.completed
        tick.notes.append(
            f"{s.env_var}={step.completed.uri}: {step.completed.objects} objects, "
            f"{step.completed.total_bytes} bytes, fingerprint {step.completed.short()}"
        )
    tick.cursor = replace(tick.cursor, sweeps=sweeps)


def evaluate_uploads(
    context: SensorEvaluationContext,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    upload_events: UploadEventsResource,
) -> SensorResult:
    """One tick of ``new_uploads_sensor``: queue events, a sweep slice, at most one run.

    Args:
        context: The sensor context; its cursor holds the state between ticks and its
            ``repository_def`` the asset graph the selection is resolved against.
        lake: Where the raw sources are (``raw_images_uri``, ``raw_texts_uri``).
        object_store: The store the sources are listed with (and the queue's credentials).
        upload_events: The queue, if any, and the tick's budget.

    Returns:
        A run request with the new cursor when a source changed; otherwise a skip reason
        saying what was checked, with the cursor the tick advanced (sweep progress, ids
        of events seen).

    Raises:
        SourceListingError: If a source cannot be listed; the tick fails with the URI named.
        ValueError: If the stored cursor is not one this sensor wrote.
    """
    previous = UploadsCursor.parse(context.cursor)
    deadline = time.monotonic() + upload_events.tick_budget_seconds
    uris = {IMAGES.name: lake.raw_images_uri, TEXTS.name: lake.raw_texts_uri}
    tick = _Tick(previous or UploadsCursor(0, {}), uris)
    queue = upload_events.queue(object_store.settings())
    if queue is not None:
        _receive(tick, queue, upload_events, deadline)
    last = tick.cursor.last_sweep
    now = time.time()
    if queue is None or last is None or now - last >= upload_events.sweep_interval_seconds:
        _sweep(tick, object_store.store(), upload_events, deadline)
        if queue is not None:
            tick.cursor = replace(tick.cursor, last_sweep=now)
    result = _decide(context, tick)
    if queue is not None and tick.receipts and not tick.keep_messages:
        queue.delete(tick.receipts)  # after the decision: a failed tick leaves them queued
    return result


def _decide(context: SensorEvaluationContext, tick: _Tick) -> SensorResult:
    """The tick's result: a run request for the changed sources, or a skip."""
    checked = "; ".join(tick.notes) or "nothing due this tick"
    context.log.info(f"checked {checked}; LIST calls: {tick.list_calls}")
    empty = [s for s in SOURCES if s.name in tick.rounds and tick.rounds[s.name].is_empty]
    if empty:
        missing = ", ".join(f"{s.env_var}={tick.rounds[s.name].uri}" for s in empty)
        # The cursor stays as it was, and the queue keeps its messages: whatever changed
        # meanwhile is picked up once the source has objects again.
        tick.keep_messages = True
        return SensorResult(
            skip_reason=f"no objects at {missing} (missing or empty); the pipeline needs both "
            f"sources, waiting for uploads. Checked {checked}",
            cursor=context.cursor,
        )
    changed = tick.changed()
    cursor = tick.cursor.with_rounds(tick.rounds)
    if not changed:
        return SensorResult(
            skip_reason=f"no new, changed or deleted objects. Checked {checked}",
            cursor=cursor.to_json(),
        )
    return _request(context, tick, changed, cursor)


def _request(
    context: SensorEvaluationContext,
    tick: _Tick,
    changed: list[UploadSource],
    cursor: UploadsCursor,
) -> SensorResult:
    """One run of the changed sources' ingest and everything downstream."""
    repository = context.repository_def
    if repository is None:
        raise ValueError(
            f"{SENSOR_NAME} needs the code location's asset graph, but the context has no "
            "repository; pass definitions= (or repository_def=) to build_sensor_context"
        )
    roots = [key for s in changed for key in (s.ingest_asset, s.quarantine_asset)]
    selection = downstream_selection(repository, roots)
    generation = cursor.generation + 1
    event_ids = sorted(e.id for s in SOURCES for e in tick.events.get(s.name, []))
    run_key = run_key_for(generation, cursor, event_ids)
    tags = {
        f"{TAG_PREFIX}/changed_sources": ",".join(s.name for s in changed),
        f"{TAG_PREFIX}/events": str(len(event_ids)),
    }
    for s in SOURCES:
        entry = cursor.sources.get(s.name) or {}
        tags[f"{TAG_PREFIX}/{s.name}_objects"] = str(entry.get("objects", "unknown"))
        tags[f"{TAG_PREFIX}/{s.name}_fingerprint"] = str(entry.get("fingerprint", "none"))[:12]
    context.log.info(
        f"changed: {', '.join(s.env_var for s in changed)}; requesting run {run_key} of "
        f"{', '.join(k.to_user_string() for k in selection)}"
    )
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, asset_selection=selection, tags=tags)],
        cursor=replace(cursor, generation=generation).to_json(),
    )


def run_key_for(generation: int, cursor: UploadsCursor, event_ids: list[str]) -> str:
    """The run key: the generation, then a digest of the sources' rounds and the events.

    ``uploads-<generation>-<24 hex digits>``. The same cursor, rounds and events always
    give the same key, so a tick that Dagster evaluates again (a daemon restart before it
    stored the new cursor) requests a run whose key exists, and Dagster does not start it
    twice; a message redelivered later is recognised by its event id (``seen``).
    """
    parts = [cursor.fingerprint(s.name) or "-" for s in SOURCES] + event_ids
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]
    return f"uploads-{generation}-{digest}"


def build_new_uploads_sensor(
    minimum_interval_seconds: int | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """Build ``new_uploads_sensor``.

    Args:
        minimum_interval_seconds: Seconds between ticks; None reads
            ``UPLOAD_SENSOR_INTERVAL_SECONDS`` (default 60).
        default_status: STOPPED (turn it on in the UI or with ``dagster sensor start``) or
            RUNNING.

    Returns:
        The sensor definition, targeting the job ``vlm_lake_job``.

    Raises:
        ValueError: If the interval is not a whole number of seconds >= 1.
    """
    if minimum_interval_seconds is None:
        minimum_interval_seconds = upload_sensor_interval_seconds()
    if (
        isinstance(minimum_interval_seconds, bool)
        or not isinstance(minimum_interval_seconds, int)
        or minimum_interval_seconds < 1
    ):
        raise ValueError(
            f"minimum_interval_seconds={minimum_interval_seconds!r} is not allowed; expected a "
            f"whole number of seconds >= 1 (or None to read {UPLOAD_SENSOR_INTERVAL_ENV})"
        )

    @sensor(
        name=SENSOR_NAME,
        job_name=JOB_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Watches RAW_IMAGES_URI and RAW_TEXTS_URI (every object; strays are quarantined) "
            "through S3 event notifications on UPLOAD_EVENTS_QUEUE_URL when set, and sweeps "
            "that list a bounded slice per tick (no object is downloaded). A new, changed or "
            "deleted object requests one run of that source's ingest asset and everything "
            "downstream. Run keys come from the events and the sweep fingerprints, so a "
            "re-evaluated tick or a redelivered message never starts a second run. A missing "
            "or empty source skips the tick (naming its URI); a listing error fails the tick. "
            f"Interval: {UPLOAD_SENSOR_INTERVAL_ENV} (now {minimum_interval_seconds}s)."
        ),
    )
    def new_uploads_sensor(
        context: SensorEvaluationContext,
        lake: LakeResource,
        object_store: ObjectStoreResource,
        upload_events: UploadEventsResource,
    ) -> SensorResult:
        """Request a run of the ingest assets (and downstream) when raw uploads change.

        Deleted objects change the fingerprint too: they request a run, whose ingest
        rewrites the dataset from what is there now, so the lake mirrors the source.
        """
        return evaluate_uploads(context, lake, object_store, upload_events)

    return new_uploads_sensor


new_uploads_sensor = build_new_uploads_sensor()
