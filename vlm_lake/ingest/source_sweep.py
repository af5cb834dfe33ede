"""A source's listing, fingerprinted a slice at a time: bounded work per call, any size.

``new_uploads_sensor`` must not list a whole bucket in one tick: at 10 million objects that
is 10,000 LIST calls. :func:`sweep` lists at most ``max_pages`` pages (1,000 keys each)
after the key where the last call stopped, and folds each object into a running
fingerprint that does not depend on how the listing was cut: the number of objects, their
bytes and the sum of a 128-bit hash of each (key, ETag, size). When the listing is
exhausted the *round* is complete; two complete rounds with equal fingerprints saw the
same objects with the same content versions. State between calls is a few hundred bytes
(:class:`SweepState`), kept in the sensor's cursor.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from vlm_lake.errors import VLMLakeError
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectInfo, ObjectStore

#: Part of every fingerprint: a new scheme gives new fingerprints, never false equality.
FINGERPRINT_VERSION = "sweep-1"
_MODULUS = 1 << 128


class SourceListingError(VLMLakeError):
    """Listing a source failed (missing bucket, denied access, unreachable endpoint)."""


@dataclass(frozen=True)
class SweepState:
    """Where a round stands: the last key listed and what it has summed so far.

    Attributes:
        after: The last key listed ("" before the first page).
        objects: Objects counted in this round so far.
        total_bytes: Their bytes.
        digest: Sum of the objects' 128-bit hashes modulo 2**128, as 32 hex digits.
        started: When the round began (seconds since the epoch).
    """

    after: str = ""
    objects: int = 0
    total_bytes: int = 0
    digest: str = "0" * 32
    started: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able dict (for a cursor)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepState:
        """Read a state written by :meth:`to_json`.

        Raises:
            ValueError: ``data`` is not such a state (names what it holds).
        """
        try:
            state = cls(
                str(data["after"]),
                int(data["objects"]),
                int(data["total_bytes"]),
                str(data["digest"]),
                float(data["started"]),
            )
            int(state.digest, 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"sweep state {data!r} is not one this code wrote; expected keys after, "
                "objects, total_bytes, digest (hex), started"
            ) from exc
        return state


@dataclass(frozen=True)
class SourceRound:
    """A complete round: every object at ``uri`` counted once."""

    uri: str
    objects: int
    total_bytes: int
    fingerprint: str

    @property
    def is_empty(self) -> bool:
        """True when the source holds no object (or does not exist)."""
        return self.objects == 0

    def short(self, length: int = 12) -> str:
        """The first ``length`` hex digits of the fingerprint, for tags and messages."""
        return self.fingerprint[:length]


@dataclass(frozen=True)
class SweepStep:
    """What one call of :func:`sweep` did.

    Attributes:
        state: The state to pass next time (a fresh one after a complete round).
        completed: The round this call completed, or None if the listing goes on.
        list_calls: LIST (or HEAD) calls made.
    """

    state: SweepState
    completed: SourceRound | None
    list_calls: int


def object_hash(info: ObjectInfo) -> int:
    """128-bit hash of an object's key, ETag and size (length-prefixed, unambiguous)."""
    digest = hashlib.sha256()
    for text in (info.key, info.etag, str(info.size)):
        data = text.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big") + data)
    return int.from_bytes(digest.digest()[:16], "big")


def round_fingerprint(uri: str, objects: int, total_bytes: int, digest: str) -> str:
    """sha256 over the scheme, the URI and the round's count, bytes and digest."""
    text = f"{FINGERPRINT_VERSION}\n{uri}\n{objects}\n{total_bytes}\n{digest}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def sweep(
    store: ObjectStore,
    uri: str,
    state: SweepState | None,
    *,
    max_pages: int,
    deadline: float,
    name: str = "uri",
) -> SweepStep:
    """List the next slice of ``uri`` and fold it into the round's fingerprint.

    Stops after ``max_pages`` LIST calls or at ``deadline`` (``time.monotonic()``),
    whichever comes first, but always makes at least one call, so every round ends.

    Args:
        store: The object store to list with.
        uri: The source (a prefix/folder or a single object/file).
        state: Where the last call stopped; None starts a round.
        max_pages: LIST calls allowed in this call (>= 1).
        deadline: ``time.monotonic()`` value after which no further call is made.
        name: What ``uri`` is called in error messages (``RAW_IMAGES_URI``).

    Raises:
        SourceListingError: A LIST call failed (names ``name`` and ``uri``).
        ValueError: ``max_pages`` < 1.
    """
    if max_pages < 1:
        raise ValueError(f"max_pages={max_pages!r} must be at least 1")
    from botocore.exceptions import BotoCoreError, ClientError

    normalized = uris.normalize(uri)
    state = state or SweepState(started=time.time())
    after, objects, nbytes = state.after, state.objects, state.total_bytes
    digest = int(state.digest, 16)
    calls, truncated = 0, True
    while truncated and calls < max_pages and (calls == 0 or time.monotonic() < deadline):
        try:
            page = store.list_page(normalized, after)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise SourceListingError(
                f"could not list {name}={uri!r} ({normalized}): {exc}; check that the bucket "
                "exists and the endpoint and credentials (AWS_* variables) are right"
            ) from exc
        calls += 1
        for info in page.objects:
            digest = (digest + object_hash(info)) % _MODULUS
            objects += 1
            nbytes += info.size
        after, truncated = page.last_key, page.truncated
    hex_digest = f"{digest:032x}"
    if truncated:
        return SweepStep(SweepState(after, objects, nbytes, hex_digest, state.started), None, calls)
    fingerprint = round_fingerprint(normalized, objects, nbytes, hex_digest)
    done = SourceRound(normalized, objects, nbytes, fingerprint)
    return SweepStep(SweepState(started=time.time()), done, calls)


def full_round(store: ObjectStore, uri: str, name: str = "uri") -> SourceRound:
    """A whole round in one call (tests, small sources): every page at ``uri``."""
    step = sweep(store, uri, None, max_pages=sys.maxsize, deadline=float("inf"), name=name)
    assert step.completed is not None  # no page or time bound: the listing was exhausted
    return step.completed
