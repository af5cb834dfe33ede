"""Sensors: start the pipeline when the raw uploads change.

``new_uploads_sensor`` lists ``RAW_IMAGES_URI`` and ``RAW_TEXTS_URI`` every
``UPLOAD_SENSOR_INTERVAL_SECONDS`` (default 60), fingerprints each listing (keys, ETags,
sizes; no object is ever read) and, when a fingerprint differs from the one in its cursor,
requests one run of the changed source's ingest asset and everything downstream of it.
"""

# No `from __future__ import annotations` here: Dagster finds a sensor's context and resource
# parameters by their annotations, checked by identity, and a string annotation fails that.

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from vlm_lake.ingest.source_state import SourceSnapshot, images_snapshot, texts_snapshot

#: The job the sensor's runs belong to (defined in ``dagster_project/definitions.py``).
JOB_NAME = "vlm_lake_job"
SENSOR_NAME = "new_uploads_sensor"
CURSOR_VERSION = 1
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


@dataclass(frozen=True)
class UploadsCursor:
    """The sensor's cursor: what each source held at the last requested run.

    Serialized as small JSON (a few hundred bytes whatever the number of objects)::

        {"v": 1, "generation": 3,
         "sources": {"images": {"objects": 5000, "bytes": 5210000, "fingerprint": "<sha256>"},
                     "texts": {"objects": 1, "bytes": 443, "fingerprint": "<sha256>"}}}

    ``generation`` counts the runs requested so far; it is part of the run key, so a source
    that goes back to an earlier state (an upload reverted) still gets a new run.
    """

    generation: int
    sources: Mapping[str, Mapping[str, Any]]

    def fingerprint(self, source: str) -> str | None:
        """The stored fingerprint of ``source``, or None if the cursor has none."""
        entry = self.sources.get(source) or {}
        value = entry.get("fingerprint")
        return value if isinstance(value, str) else None

    def to_json(self) -> str:
        """The cursor string Dagster stores."""
        return json.dumps(
            {"v": CURSOR_VERSION, "generation": self.generation, "sources": self.sources},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_snapshots(
        cls, generation: int, snapshots: Mapping[str, SourceSnapshot]
    ) -> "UploadsCursor":
        """A cursor recording ``snapshots`` (counts, bytes and full fingerprints)."""
        return cls(
            generation,
            {
                name: {"objects": s.objects, "bytes": s.total_bytes, "fingerprint": s.fingerprint}
                for name, s in snapshots.items()
            },
        )

    @classmethod
    def parse(cls, cursor: str | None) -> "UploadsCursor | None":
        """Read a stored cursor; None when there is none.

        Raises:
            ValueError: If ``cursor`` is not a cursor this sensor wrote (names the value).
        """
        if not cursor:
            return None
        try:
            data = json.loads(cursor)
        except json.JSONDecodeError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("v") != CURSOR_VERSION
            or not isinstance(data.get("generation"), int)
            or not isinstance(data.get("sources"), dict)
        ):
            raise ValueError(
                f"cursor={cursor[:200]!r} is not a {SENSOR_NAME} cursor; expected JSON "
                f'{{"v": {CURSOR_VERSION}, "generation": <int>, "sources": {{...}}}}. Clear it '
                f"(UI: sensor page > Cursor, or `dagster sensor cursor {SENSOR_NAME} --delete`) "
                "to start over"
            )
        return cls(data["generation"], data["sources"])


def run_key_for(generation: int, snapshots: Mapping[str, SourceSnapshot]) -> str:
    """The run key: this request's generation and both sources' fingerprints.

    ``uploads-<generation>-<images fingerprint[:16]>-<texts fingerprint[:16]>``, where
    ``generation`` is the stored cursor's generation plus one.

    The same cursor and the same listings always give the same key, so a tick that Dagster
    evaluates again (a daemon restart before it stored the new cursor) requests a run whose
    key already exists, and Dagster does not start it twice.
    """
    parts = "-".join(snapshots[s.name].short(16) for s in SOURCES)
    return f"uploads-{generation}-{parts}"


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


def evaluate_uploads(
    context: SensorEvaluationContext, lake: LakeResource, object_store: ObjectStoreResource
) -> SensorResult:
    """One tick of ``new_uploads_sensor``.

    Args:
        context: The sensor context; its cursor holds the last requested state and its
            ``repository_def`` the asset graph the selection is resolved against.
        lake: Where the raw sources are (``raw_images_uri``, ``raw_texts_uri``).
        object_store: The store the sources are listed with.

    Returns:
        A run request with the new cursor when a source changed (asset checks on the selected
        assets run too: Dagster adds them when ``asset_check_keys`` is unset); otherwise a
        skip reason with the counts checked, and the cursor unchanged.

    Raises:
        SourceListingError: If a source cannot be listed; the tick fails with the URI named.
        ValueError: If the stored cursor is not one this sensor wrote.
    """
    previous = UploadsCursor.parse(context.cursor)
    store = object_store.store()
    snapshots = {
        IMAGES.name: images_snapshot(store, lake.raw_images_uri),
        TEXTS.name: texts_snapshot(store, lake.raw_texts_uri),
    }
    checked = "; ".join(
        f"{s.env_var}={snapshots[s.name].uri}: {snapshots[s.name].objects} objects, "
        f"{snapshots[s.name].total_bytes} bytes, fingerprint {snapshots[s.name].short()}"
        for s in SOURCES
    )
    context.log.info(f"checked {checked}")

    empty = [s for s in SOURCES if snapshots[s.name].is_empty]
    if empty:
        missing = ", ".join(f"{s.env_var}={snapshots[s.name].uri}" for s in empty)
        # The cursor stays as it was: whatever changed meanwhile is picked up once the
        # source has objects again.
        return SensorResult(
            skip_reason=f"no objects at {missing} (missing or empty); the pipeline needs both "
            f"sources, waiting for uploads. Checked {checked}"
        )

    changed = [
        s
        for s in SOURCES
        if previous is None or previous.fingerprint(s.name) != snapshots[s.name].fingerprint
    ]
    if not changed:
        return SensorResult(skip_reason=f"no new, changed or deleted objects. Checked {checked}")

    repository = context.repository_def
    if repository is None:
        raise ValueError(
            f"{SENSOR_NAME} needs the code location's asset graph, but the context has no "
            "repository; pass definitions= (or repository_def=) to build_sensor_context"
        )
    roots = [key for s in changed for key in (s.ingest_asset, s.quarantine_asset)]
    selection = downstream_selection(repository, roots)
    generation = (previous.generation if previous else 0) + 1
    run_key = run_key_for(generation, snapshots)
    tags = {f"{TAG_PREFIX}/changed_sources": ",".join(s.name for s in changed)}
    for s in SOURCES:
        tags[f"{TAG_PREFIX}/{s.name}_objects"] = str(snapshots[s.name].objects)
        tags[f"{TAG_PREFIX}/{s.name}_fingerprint"] = snapshots[s.name].short()
    context.log.info(
        f"changed: {', '.join(s.env_var for s in changed)}; requesting run {run_key} of "
        f"{', '.join(k.to_user_string() for k in selection)}"
    )
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, asset_selection=selection, tags=tags)],
        cursor=UploadsCursor.from_snapshots(generation, snapshots).to_json(),
    )


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
            "Watches RAW_IMAGES_URI and RAW_TEXTS_URI (every object; strays are quarantined) by "
            "listing them (paginated; no object is downloaded). A new, changed (new ETag) or "
            "deleted object requests one run of that source's ingest asset and everything "
            "downstream; a deletion re-runs the ingest so the lake mirrors the source. The "
            "run key is the cursor's generation plus both listings' fingerprints, so a "
            "re-evaluated tick never starts a second run. A missing or empty source skips "
            "the tick (naming its URI) and keeps the cursor; a listing error fails the tick. "
            f"Interval: {UPLOAD_SENSOR_INTERVAL_ENV} (now {minimum_interval_seconds}s)."
        ),
    )
    def new_uploads_sensor(
        context: SensorEvaluationContext, lake: LakeResource, object_store: ObjectStoreResource
    ) -> SensorResult:
        """Request a run of the ingest assets (and downstream) when raw uploads change.

        Deleted objects change the fingerprint too: they request a run, whose ingest
        rewrites the dataset from what is there now, so the lake mirrors the source.
        """
        return evaluate_uploads(context, lake, object_store)

    return new_uploads_sensor


new_uploads_sensor = build_new_uploads_sensor()
