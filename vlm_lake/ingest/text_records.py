"""Read and validate text sources: JSON arrays and JSON Lines files, record by record.

A document is an object with a string ``docid``, a non-empty string ``text`` and image
references ``image_id1`` ... ``image_idK`` (any may be absent or null). :func:`scan_sources`
is the text ingest's first pass: it validates every record of every file, sends bad ones
(and unreadable files) to the quarantine list with the reason, keeps one copy of each
docid, hashes each good record and finds K. It holds one small entry per document (id,
hash, location), never the texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError, SourceNotFoundError
from vlm_lake.ingest.quarantine import RejectedDocument
from vlm_lake.store import uris
from vlm_lake.store.object_info import ObjectInfo
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import slot_number

log = logging.getLogger(__name__)

#: Object names read as text sources (compared lower-cased).
TEXT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson")
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


def file_records(store: ObjectStore, info: ObjectInfo) -> Iterator[tuple[int | None, Any]]:
    """Yield ``(line, record)`` from one file; a bad line yields an InvalidDocumentError.

    A ``.json`` file holds one JSON value (an array of records, or one record); if it
    holds several values it is read as JSON Lines. ``.jsonl`` / ``.ndjson`` are read line
    by line.
    """
    raw = store.read_bytes(info.uri)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield None, InvalidDocumentError(info.uri, f"not UTF-8 text ({exc})", stage="read")
        return
    if not info.key.lower().endswith(JSON_LINES_SUFFIXES):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # several JSON values: read it as JSON Lines
                problem = f"invalid JSON: {exc.msg} (column {exc.colno})"
                error = InvalidDocumentError(info.uri, problem, line=exc.lineno, stage="parse")
                yield exc.lineno, error
                return
        else:
            if isinstance(doc, list):
                for record in doc:
                    yield None, record
            else:
                yield 1, doc
            return
    yield from _json_lines(text, info)


def _json_lines(text: str, info: ObjectInfo) -> Iterator[tuple[int | None, Any]]:
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield lineno, parse_json_line(line, lineno, info.uri)


def parse_json_line(line: str, lineno: int, uri: str) -> Any:
    """One JSON Lines record, or the :class:`InvalidDocumentError` saying why it is not."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON Lines record: {exc.msg} (column {exc.colno})"
        return InvalidDocumentError(uri, problem, line=lineno, stage="parse")


def record_slots(record: dict[str, Any]) -> dict[int, Any]:
    """The record's ``image_idN`` values by slot number N (nulls included)."""
    return {n: v for k, v in record.items() if (n := slot_number(k)) is not None}


def _validate(record: Any, info: ObjectInfo, line: int | None, index: int) -> dict[int, str]:
    """Check the record's types and return its image references by slot number."""
    where = f"record #{index}"
    if not isinstance(record, dict):
        raise InvalidDocumentError(
            info.uri, f"{where} is a {type(record).__name__}, expected a JSON object", line=line
        )
    for key in ("docid", "text"):
        if key not in record or record[key] is None:
            raise InvalidDocumentError(
                info.uri,
                f"{where} has no {key!r}; every document needs 'docid' and 'text' "
                f"(keys present: {sorted(record)})",
                line=line,
            )
        if not isinstance(record[key], str):
            raise InvalidDocumentError(
                info.uri,
                f"{where} has {key}={record[key]!r} of type "
                f"{type(record[key]).__name__}; expected a string",
                line=line,
            )
    slots: dict[int, str] = {}
    for slot, value in record_slots(record).items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidDocumentError(
                info.uri,
                f"{where} (docid={record['docid']!r}) has image_id{slot}={value!r} of type "
                f"{type(value).__name__}; expected a string image id",
                line=line,
            )
        if slot < 1:
            raise InvalidDocumentError(
                info.uri,
                f"{where} has key 'image_id{slot}'; image slots start at image_id1",
                line=line,
            )
        slots[slot] = value
    return slots


def check_record(
    record: Any, info: ObjectInfo, line: int | None, index: int, max_slots: int
) -> dict[int, str]:
    """Validate one record against the contract; return its image ids by slot number.

    Raises:
        InvalidDocumentError: Not an object, no string docid/text, a blank docid or text,
            an image id that is not a string, or a slot above ``max_slots``.
    """
    slots = _validate(record, info, line, index)
    docid = record["docid"]
    if not docid.strip():
        raise InvalidDocumentError(
            info.uri, f"record #{index} has docid={docid!r}; expected a non-blank string", line=line
        )
    if not record["text"].strip():
        raise InvalidDocumentError(
            info.uri,
            f"record #{index} (docid={docid!r}) has an empty text; expected a non-empty string",
            line=line,
        )
    if slots and max(slots) > max_slots:
        raise InvalidDocumentError(
            info.uri,
            f"record #{index} (docid={docid!r}) uses image_id{max(slots)}; at most "
            f"{max_slots} image slots are allowed (max_image_slots)",
            line=line,
        )
    return slots


def record_hash(docid: str, text: str, slots: dict[int, str]) -> str:
    """sha256 of a document's content: its docid, text and image ids by slot."""
    payload = json.dumps([docid, text, sorted(slots.items())], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class AcceptedDoc:
    """Where the accepted copy of one docid is, and a hash of its content."""

    file: int
    index: int
    line: int | None
    sha256: str


@dataclass
class TextScan:
    """The first pass's result: the files, the accepted documents, the rejections, K."""

    files: list[ObjectInfo]
    docs: dict[str, AcceptedDoc]
    rejected: list[RejectedDocument]
    num_slots: int


class _Scanner:
    """Accumulates one scan: accepts or rejects each record as the files are read."""

    def __init__(self, files: list[ObjectInfo], kept: dict[str, str], strict: bool) -> None:
        self.scan = TextScan(files, {}, [], 1)
        self.kept = kept
        self.strict = strict

    def reject(
        self, uri: str, stage: str, line: int | None, index: int | None, docid: Any, reason: str
    ) -> None:
        docid_text = None if docid is None else str(docid)
        self.scan.rejected.append(RejectedDocument(uri, stage, line, index, docid_text, reason))

    def offer(
        self, file_no: int, line: int | None, index: int, record: Any, max_slots: int
    ) -> None:
        """Accept ``record`` or reject it (or, strict, raise) with the reason."""
        info = self.scan.files[file_no]
        try:
            slots = check_record(record, info, line, index, max_slots)
            self._claim(record["docid"], info)
        except (InvalidDocumentError, DuplicateKeyError) as exc:
            if self.strict:
                raise
            if isinstance(exc, InvalidDocumentError):
                stage, reason = exc.stage, exc.problem
            else:
                stage, reason = "duplicate", str(exc)
            docid = record.get("docid") if isinstance(record, dict) else None
            self.reject(info.uri, stage, line, index, docid, reason)
            return
        docid = record["docid"]
        digest = record_hash(docid, record["text"], slots)
        self.scan.docs[docid] = AcceptedDoc(file_no, index, line, digest)
        self.scan.num_slots = max(self.scan.num_slots, *slots.keys(), 1)

    def _claim(self, docid: str, info: ObjectInfo) -> None:
        """Make room for ``docid`` from ``info``, or raise DuplicateKeyError.

        Of two records with the same docid, the one from the file the published table
        took it from (``kept``) wins; otherwise the first in key order.
        """
        first = self.scan.docs.get(docid)
        if first is None:
            return
        first_uri = self.scan.files[first.file].uri
        where = first_uri + (f" line {first.line}" if first.line else f" record #{first.index}")
        if not self.strict and self.kept.get(docid) == info.uri != first_uri:
            reason = (
                f"docid {docid!r} appears twice: in {where} and {info.uri!r}; "
                f"the copy from {info.uri!r}, already in the lake, is kept"
            )
            self.reject(first_uri, "duplicate", first.line, first.index, docid, reason)
            del self.scan.docs[docid]
            return
        raise DuplicateKeyError(
            f"docid {docid!r} appears twice: in {where} and {info.uri!r}; "
            "docid must be unique across all text files (the first one is kept)"
        )


#: The text files of a source, and the objects whose names are not text sources.
TextListing = tuple[list[ObjectInfo], list[ObjectInfo]]


def list_text_sources(store: ObjectStore, texts_uri: str) -> TextListing:
    """The text files at ``texts_uri`` and the objects whose names are not text sources.

    Raises:
        SourceNotFoundError: There is no object at ``texts_uri``.
    """
    files: list[ObjectInfo] = []
    misnamed: list[ObjectInfo] = []
    for info in store.list(texts_uri):
        (files if uris.suffix(info.key) in TEXT_SUFFIXES else misnamed).append(info)
    if not files and not misnamed:
        raise SourceNotFoundError(
            f"no objects at texts_uri={texts_uri!r}; expected a JSON array or JSON Lines "
            f"file (suffixes {', '.join(TEXT_SUFFIXES)}) or a prefix holding them"
        )
    return files, misnamed


def misnamed_rejections(misnamed: list[ObjectInfo], strict: bool) -> list[RejectedDocument]:
    """The ``listing`` rejections of objects that are not text sources.

    Raises:
        InvalidDocumentError: With ``strict``, for the first such object.
    """
    rejected = []
    for info in misnamed:
        reason = (
            f"the name does not end in a text extension; expected one of "
            f"{', '.join(TEXT_SUFFIXES)} (any case): a JSON array or JSON Lines file"
        )
        if strict:
            raise InvalidDocumentError(info.uri, reason, stage="listing")
        log.warning("quarantined %s: %s", info.uri, reason)
        rejected.append(RejectedDocument(info.uri, "listing", None, None, None, reason))
    return rejected


def scan_sources(
    store: ObjectStore,
    texts_uri: str,
    *,
    strict: bool,
    max_slots: int,
    kept_sources: dict[str, str] | None = None,
    listing: TextListing | None = None,
) -> TextScan:
    """First pass over every text file: validate, quarantine, de-duplicate, hash; find K.

    Args:
        store: Where the files are.
        texts_uri: A file, or a prefix/folder of them.
        strict: Raise at the first bad record instead of rejecting it.
        max_slots: The highest image slot a record may use.
        kept_sources: ``docid -> source_uri`` of the published table: of two copies of a
            docid, the one from that file is kept.
        listing: What :func:`list_text_sources` returned, if the caller listed already.

    An object whose name does not end in one of :data:`TEXT_SUFFIXES` is not read: it is
    rejected at the ``listing`` stage with the reason (or raises, with ``strict``), so a
    JSON Lines file named ``more_docs.txt`` is quarantined, never silently skipped.

    Raises:
        SourceNotFoundError: There is no object at ``texts_uri``.
        InvalidDocumentError: With ``strict``, the first bad file name or record.
    """
    files, misnamed = listing or list_text_sources(store, texts_uri)
    scanner = _Scanner(files, kept_sources or {}, strict)
    scanner.scan.rejected.extend(misnamed_rejections(misnamed, strict))
    for file_no, info in enumerate(files):
        index = -1
        for line, record in file_records(store, info):
            if isinstance(record, InvalidDocumentError):
                if strict:
                    raise record
                scanner.reject(info.uri, record.stage, record.line, None, None, record.problem)
                continue
            index += 1
            scanner.offer(file_no, line, index, record, max_slots)
    return scanner.scan
