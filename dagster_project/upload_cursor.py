"""The cursor of ``new_uploads_sensor``: bounded state, whatever the bucket holds.

Serialized as compact JSON::

    {"v": 2, "generation": 3,
     "sources": {"images": {"objects": 5000, "bytes": 5210000, "fingerprint": "<sha256>"},
                 "texts": {...}},
     "sweeps": {"images": {"after": "raw/img_04999.jpg", "objects": 5000, ...}},
     "seen": ["<event id>", ...], "last_sweep": 1764741600.0}

``sources`` holds each source's last *complete* sweep round; ``sweeps`` the rounds in
progress (absent when every round completed within its tick); ``seen`` the ids of the
latest queue events (at most :data:`MAX_SEEN`), so a redelivered message starts nothing;
``last_sweep`` when a sweep last ran (only with a queue, where sweeps are spaced out).
``generation`` counts the runs requested; it is part of the run key, so a source that
goes back to an earlier state still gets a new run. Cursors of version 1 (whole-listing
fingerprints) are read as a new start that keeps the generation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vlm_lake.ingest.source_sweep import SourceRound, SweepState

SENSOR_NAME = "new_uploads_sensor"
CURSOR_VERSION = 2
#: Event ids remembered between ticks: more than a tick reads, so a message redelivered
#: within the next ticks is recognised.
MAX_SEEN = 2000


@dataclass(frozen=True)
class UploadsCursor:
    """The sensor's state between ticks (see the module docstring)."""

    generation: int
    sources: Mapping[str, Mapping[str, Any]]
    sweeps: Mapping[str, SweepState] = field(default_factory=dict)
    seen: tuple[str, ...] = ()
    last_sweep: float | None = None

    def fingerprint(self, source: str) -> str | None:
        """The fingerprint of ``source``'s last complete round, or None."""
        entry = self.sources.get(source) or {}
        value = entry.get("fingerprint")
        return value if isinstance(value, str) else None

    def with_rounds(self, rounds: Mapping[str, SourceRound]) -> UploadsCursor:
        """This cursor with ``rounds`` recorded as the sources' last complete rounds."""
        sources = dict(self.sources)
        for name, done in rounds.items():
            sources[name] = {
                "objects": done.objects,
                "bytes": done.total_bytes,
                "fingerprint": done.fingerprint,
            }
        return replace(self, sources=sources)

    def remember(self, event_ids: list[str]) -> UploadsCursor:
        """This cursor with ``event_ids`` added to the seen ids (oldest dropped first)."""
        seen = (*self.seen, *event_ids)[-MAX_SEEN:]
        return replace(self, seen=seen)

    def to_json(self) -> str:
        """The cursor string Dagster stores (optional parts only when they hold something)."""
        data: dict[str, Any] = {
            "v": CURSOR_VERSION,
            "generation": self.generation,
            "sources": self.sources,
        }
        if self.sweeps:
            data["sweeps"] = {name: state.to_json() for name, state in self.sweeps.items()}
        if self.seen:
            data["seen"] = list(self.seen)
        if self.last_sweep is not None:
            data["last_sweep"] = self.last_sweep
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, cursor: str | None) -> UploadsCursor | None:
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
            or data.get("v") not in (1, CURSOR_VERSION)
            or not isinstance(data.get("generation"), int)
            or not isinstance(data.get("sources"), dict)
        ):
            raise ValueError(
                f"cursor={cursor[:200]!r} is not a {SENSOR_NAME} cursor; expected JSON "
                f'{{"v": {CURSOR_VERSION}, "generation": <int>, "sources": {{...}}}}. Clear it '
                f"(UI: sensor page > Cursor, or `dagster sensor cursor {SENSOR_NAME} --delete`) "
                "to start over"
            )
        if data["v"] == 1:  # whole-listing fingerprints: not comparable with sweep rounds
            return cls(data["generation"], {})
        sweeps = {k: SweepState.from_json(v) for k, v in data.get("sweeps", {}).items()}
        seen = tuple(str(i) for i in data.get("seen", []))
        last = data.get("last_sweep")
        return cls(data["generation"], data["sources"], sweeps, seen, last)
