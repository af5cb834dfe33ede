"""Text ingest work units: a whole file, or a byte range of a large JSON Lines file.

A JSON Lines file larger than ``split_bytes`` is cut into ranges; the range ``[start,
stop)`` owns every line whose first byte lies in it, so each line belongs to exactly one
range whatever the cut points. A task reads its range plus the rest of the line that
crosses ``stop`` (bounded memory: one range and one line). Line numbers and record
numbers inside a range are local; :func:`offsets` turns the per-range counts into the
file-wide numbers the local path reports.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vlm_lake.errors import InvalidDocumentError
from vlm_lake.ingest.text_records import JSON_LINES_SUFFIXES, file_records, parse_json_line
from vlm_lake.store.object_info import ObjectInfo
from vlm_lake.store.object_store import ObjectStore

#: JSON Lines files above this size are split into ranges of this many bytes.
SPLIT_BYTES = 64 * 1024 * 1024
#: Bytes read at a time past ``stop`` while looking for the end of the last line.
_TAIL_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TextUnit:
    """One task's share of the text source.

    Attributes:
        unit: Number of the unit (file order, then range order).
        file_no: Number of the file in the listing (key order).
        uri: The file.
        key: Its key (or local path).
        size: The file's size.
        etag: The file's ETag (or local stamp).
        start: First byte of the range (0 for a whole file).
        stop: Byte after the range; None for the whole file.
    """

    unit: int
    file_no: int
    uri: str
    key: str
    size: int
    etag: str
    start: int = 0
    stop: int | None = None

    @property
    def info(self) -> ObjectInfo:
        """The file, as a listing describes it."""
        return ObjectInfo(self.uri, self.key, self.size, self.etag)


def plan_text_units(files: Sequence[ObjectInfo], split_bytes: int = SPLIT_BYTES) -> list[TextUnit]:
    """The units of ``files``: ranges for JSON Lines files above ``split_bytes``."""
    if split_bytes < 1:
        raise ValueError(f"split_bytes={split_bytes!r} must be a positive number of bytes")
    units: list[TextUnit] = []
    for file_no, info in enumerate(files):
        lines = info.key.lower().endswith(JSON_LINES_SUFFIXES)
        if not lines or info.size <= split_bytes:
            units.append(TextUnit(len(units), file_no, info.uri, info.key, info.size, info.etag))
            continue
        for start in range(0, info.size, split_bytes):
            stop = min(start + split_bytes, info.size)
            units.append(
                TextUnit(len(units), file_no, info.uri, info.key, info.size, info.etag, start, stop)
            )
    return units


def _owned_bytes(store: ObjectStore, unit: TextUnit) -> bytes:
    """The bytes of the lines ``unit`` owns (those starting in ``[start, stop)``)."""
    assert unit.stop is not None
    first = max(0, unit.start - 1)
    data = store.read_range(unit.uri, first, unit.stop)
    end = unit.stop
    while end < unit.size and not data.endswith(b"\n"):
        more = store.read_range(unit.uri, end, min(end + _TAIL_CHUNK, unit.size))
        cut = more.find(b"\n")
        data += more if cut < 0 else more[: cut + 1]
        end += len(more) if cut < 0 else cut + 1
    if unit.start == 0:
        return data
    newline = data.find(b"\n")  # data[0] is byte start-1: skip the line that began before
    return b"" if newline < 0 else data[newline + 1 :]


def unit_records(
    store: ObjectStore, unit: TextUnit, stats: dict[str, int] | None = None
) -> Iterator[tuple[int | None, object]]:
    """``(line, record)`` of one unit, lines local to the unit (1-based); bad lines as errors.

    A whole file is read as :func:`~vlm_lake.ingest.text_records.file_records` reads it. A
    range is JSON Lines: a line that is not UTF-8 or not JSON yields an
    :class:`InvalidDocumentError` (the whole-file path rejects a file that is not UTF-8 at
    once; a range can only speak for its own lines). ``stats["lines"]`` is set to the lines
    a range owns (for the file-wide line numbers of the ranges after it).
    """
    if unit.stop is None:
        yield from file_records(store, unit.info)
        return
    owned = _owned_bytes(store, unit)
    if unit.start == 0 and owned.startswith(b"\xef\xbb\xbf"):
        owned = owned[3:]
    body = owned[:-1] if owned.endswith(b"\n") else owned
    lines = body.split(b"\n") if owned else []  # b"\n" alone is one (blank) line
    if stats is not None:
        stats["lines"] = len(lines)
    for lineno, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 text ({exc})"
            yield lineno, InvalidDocumentError(unit.uri, problem, line=lineno, stage="read")
            continue
        if line.strip():
            yield lineno, parse_json_line(line, lineno, unit.uri)


def offsets(
    units: Sequence[TextUnit], lines: dict[int, int], records: dict[int, int]
) -> dict[int, tuple[int, int]]:
    """``unit -> (lines before it, records before it)`` within its file.

    Args:
        units: All units, in order.
        lines: Lines each unit owns.
        records: Records (valid JSON values) each unit read.
    """
    result: dict[int, tuple[int, int]] = {}
    file_no, line_base, record_base = -1, 0, 0
    for unit in units:
        if unit.file_no != file_no:
            file_no, line_base, record_base = unit.file_no, 0, 0
        result[unit.unit] = (line_base, record_base)
        line_base += lines.get(unit.unit, 0)
        record_base += records.get(unit.unit, 0)
    return result
