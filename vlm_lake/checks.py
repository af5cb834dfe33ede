"""Data checks with evidence: each returns what it observed, what it expected, and examples.

They read one pinned version (the candidate a run just wrote) and never modify anything.
``blocking`` marks checks that guard the training output: if one fails, the candidate is
not published. Non-blocking checks are warnings (duplicate photos, dangling references).
The Dagster assets turn each :class:`CheckOutcome` into an ``AssetCheckResult``.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake import lance_io
from vlm_lake.errors import InvalidImageError
from vlm_lake.images import probe_image
from vlm_lake.object_store import ObjectStore
from vlm_lake.text_ingest import image_id_columns, text_schema

log = logging.getLogger(__name__)

#: How many offending values a check lists in its metadata.
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check, with the evidence.

    Attributes:
        name: Check name (stable: it is the Dagster check name).
        passed: Whether the data met the expectation.
        blocking: Whether a failure must stop publication (else it is a warning).
        observed: The measured value (a count, a schema...).
        expected: The expectation, in words.
        details: Examples of offending values and other evidence.
    """

    name: str
    passed: bool
    blocking: bool
    observed: Any
    expected: str
    details: dict[str, Any] = field(default_factory=dict)


def blocking_failures(outcomes: Iterable[CheckOutcome]) -> list[CheckOutcome]:
    """The failed blocking checks (empty means the candidate may be published)."""
    return [o for o in outcomes if o.blocking and not o.passed]


def _duplicates(values: Sequence[Any]) -> dict[Any, int]:
    return {v: n for v, n in Counter(values).items() if n > 1}


def _unique_key(name: str, ds: Any, key: str) -> CheckOutcome:
    values = ds.to_table(columns=[key]).column(key).to_pylist()
    dups = _duplicates(values)
    return CheckOutcome(
        name=name,
        passed=not dups,
        blocking=True,
        observed=len(dups),
        expected=f"0 duplicate {key} values among {len(values)} rows",
        details={"duplicates": [{key: k, "rows": n} for k, n in list(dups.items())[:MAX_EXAMPLES]]},
    )


# -- image_lance ---------------------------------------------------------------------------


def check_images(
    ds: Any, written_ids: Sequence[str] | None = None, batch_rows: int = 64
) -> list[CheckOutcome]:
    """Checks of one ``image_lance`` version.

    Args:
        ds: The dataset, opened at the candidate version.
        written_ids: Rows written by the run that produced it; only those are decoded again
            (the others were decoded when they were written and have not changed). None
            decodes every row.
        batch_rows: Rows per read while decoding.

    Returns:
        ``image_id_unique`` and ``images_decode`` (blocking), ``duplicate_images`` (warning).
    """
    outcomes = [_unique_key("image_id_unique", ds, "image_id")]

    scanned = 0
    failures: list[dict[str, str]] = []
    for batch in _image_batches(ds, written_ids, batch_rows):
        ids = batch.column("image_id").to_pylist()
        for image_id, data, uri in zip(
            ids,
            batch.column("image_data").to_pylist(),
            batch.column("source_uri").to_pylist(),
            strict=True,
        ):
            scanned += 1
            try:
                probe_image(data, uri)
            except InvalidImageError as exc:
                failures.append({"image_id": image_id, "problem": exc.problem})
    scope = "every row" if written_ids is None else f"the {len(written_ids)} rows this run wrote"
    outcomes.append(
        CheckOutcome(
            name="images_decode",
            passed=not failures,
            blocking=True,
            observed=len(failures),
            expected=f"0 undecodable images ({scope}; {scanned} decoded)",
            details={"decoded": scanned, "failures": failures[:MAX_EXAMPLES]},
        )
    )

    table = ds.to_table(columns=["image_id", "sha256"])
    groups: dict[str, list[str]] = {}
    for image_id, digest in zip(
        table.column("image_id").to_pylist(), table.column("sha256").to_pylist(), strict=True
    ):
        groups.setdefault(digest, []).append(image_id)
    same = [{"sha256": d[:16], "image_ids": ids} for d, ids in groups.items() if len(ids) > 1]
    outcomes.append(
        CheckOutcome(
            name="duplicate_images",
            passed=not same,
            blocking=False,
            observed=len(same),
            expected="no two image_ids with byte-identical content (same sha256)",
            details={"groups": same[:MAX_EXAMPLES]},
        )
    )
    return outcomes


def _image_batches(
    ds: Any, written_ids: Sequence[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    columns = ["image_id", "image_data", "source_uri"]
    if written_ids is None:
        yield from lance_io.read_ranges(ds, columns, batch_rows)
        return
    for start in range(0, len(written_ids), batch_rows):
        chunk = written_ids[start : start + batch_rows]
        yield from ds.to_batches(
            columns=columns,
            filter=f"image_id IN ({lance_io.sql_string_list(chunk)})",
            batch_size=batch_rows,
        )


# -- text_lance ----------------------------------------------------------------------------


def check_texts(ds: Any) -> list[CheckOutcome]:
    """Checks of one ``text_lance`` version: ``docid_unique``, ``text_not_empty``, ``schema``.

    All three are blocking.
    """
    outcomes = [_unique_key("docid_unique", ds, "docid")]
    table = ds.to_table(columns=["docid", "text"])
    empty_mask = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(table.column("text"), "")), "")
    empty = table.column("docid").filter(empty_mask).to_pylist()
    outcomes.append(
        CheckOutcome(
            name="text_not_empty",
            passed=not empty,
            blocking=True,
            observed=len(empty),
            expected=f"0 documents with an empty or whitespace-only text among {len(table)}",
            details={"docids": empty[:MAX_EXAMPLES]},
        )
    )
    num_slots = len(image_id_columns(ds.schema))
    contract = text_schema(num_slots)
    observed = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in ds.schema]
    wanted = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in contract]
    outcomes.append(
        CheckOutcome(
            name="schema_as_contracted",
            passed=ds.schema.equals(contract) and num_slots >= 1,
            blocking=True,
            observed=", ".join(observed),
            expected=", ".join(wanted),
            details={"image_slots": num_slots},
        )
    )
    return outcomes


# -- multimodal_lance ----------------------------------------------------------------------


def check_multimodal(ds: Any, texts: Any, images: Any) -> list[CheckOutcome]:
    """Checks of one ``multimodal_lance`` version against the inputs it was built from.

    Args:
        ds: The candidate multimodal version.
        texts: The ``text_lance`` version it was built from.
        images: The ``image_lance`` version it was built from.

    Returns:
        ``one_row_per_document`` (blocking) and ``dangling_references`` (warning).
    """
    docids = ds.to_table(columns=["docid"]).column("docid").to_pylist()
    source = set(texts.to_table(columns=["docid"]).column("docid").to_pylist())
    dups = _duplicates(docids)
    got = set(docids)
    missing, extra = sorted(source - got), sorted(got - source)
    outcomes = [
        CheckOutcome(
            name="one_row_per_document",
            passed=not dups and not missing and not extra,
            blocking=True,
            observed=f"{len(docids)} rows for {len(got)} docids",
            expected=f"exactly one row for each of the {len(source)} documents in text_lance",
            details={
                "duplicated": list(dups)[:MAX_EXAMPLES],
                "missing": missing[:MAX_EXAMPLES],
                "unexpected": extra[:MAX_EXAMPLES],
            },
        )
    ]
    known = pa.array(images.to_table(columns=["image_id"]).column("image_id").to_pylist())
    slots = image_id_columns(ds.schema)
    table = ds.to_table(columns=["docid", *slots])
    dangling: list[dict[str, str]] = []
    count = 0
    for slot in slots:
        col = table.column(slot)
        mask = pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, value_set=known)))
        count += pc.sum(mask).as_py() or 0
        if len(dangling) < MAX_EXAMPLES:
            for docid, image_id in zip(
                table.column("docid").filter(mask).to_pylist(),
                col.filter(mask).to_pylist(),
                strict=True,
            ):
                dangling.append({"docid": docid, "slot": slot, "image_id": image_id})
    outcomes.append(
        CheckOutcome(
            name="dangling_references",
            passed=count == 0,
            blocking=False,
            observed=count,
            expected="every referenced image_id exists in image_lance",
            details={"references": dangling[:MAX_EXAMPLES]},
        )
    )
    return outcomes


# -- image_features ------------------------------------------------------------------------

#: Cosine similarity from which two images count as near-duplicates.
NEAR_DUPLICATE_COSINE = 0.98
#: Up to this many rows the near-duplicate check compares every pair; above it, only the
#: rows a run computed against all rows (an all-pairs pass costs rows^2 x 2048 x 2 flops).
ALL_PAIRS_MAX_ROWS = 20_000


def check_features(
    ds: Any,
    images: Any,
    *,
    model: str,
    weights: str,
    computed_ids: Sequence[str],
    random_init: bool,
    threshold: float = NEAR_DUPLICATE_COSINE,
    batch_rows: int = 1024,
) -> list[CheckOutcome]:
    """Checks of one ``image_features`` version against the ``image_lance`` it was built from.

    Args:
        ds: The features, opened at the candidate version.
        images: ``image_lance`` at the version the features were computed from.
        model: The model name every row must carry.
        weights: The weights identity every row must carry.
        computed_ids: Rows the run computed (compared with every row for near-duplicates
            when the table has more than :data:`ALL_PAIRS_MAX_ROWS` rows).
        random_init: Whether the weights are random (said in the near-duplicate evidence).
        threshold: Cosine similarity from which a pair is a near-duplicate.
        batch_rows: Rows per read while scanning the vectors.

    Returns:
        ``one_row_per_image``, ``features_finite`` and ``single_model`` (blocking) and
        ``near_duplicate_images`` (warning).
    """
    from vlm_lake.similarity import near_duplicate_pairs

    want = lance_io.column_map(images, "image_id", "sha256")
    table = ds.to_table(columns=["image_id", "image_sha256", "model", "weights"])
    ids = table.column("image_id").to_pylist()
    have = dict(zip(ids, table.column("image_sha256").to_pylist(), strict=True))
    dups = _duplicates(ids)
    missing = sorted(want.keys() - have.keys())
    extra = sorted(have.keys() - want.keys())
    stale = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    problems = len(missing) + len(extra) + len(stale) + len(dups)
    outcomes = [
        CheckOutcome(
            name="one_row_per_image",
            passed=problems == 0,
            blocking=True,
            observed={
                "rows": len(ids),
                "images": len(want),
                "missing": len(missing),
                "extra": len(extra),
                "stale": len(stale),
                "duplicated": len(dups),
            },
            expected=f"exactly one row per image of image_lance ({len(want)}), each with the "
            "image's current sha256",
            details={
                "missing": missing[:MAX_EXAMPLES],
                "extra": extra[:MAX_EXAMPLES],
                "stale": stale[:MAX_EXAMPLES],
                "duplicated": sorted(dups)[:MAX_EXAMPLES],
            },
        )
    ]

    bad: list[str] = []
    for batch in lance_io.read_ranges(ds, ["image_id", "features"], batch_rows):
        values = batch.column("features").flatten().to_numpy(zero_copy_only=False)
        finite = np.isfinite(values.reshape(batch.num_rows, -1)).all(axis=1)
        if not finite.all():
            batch_ids = batch.column("image_id").to_pylist()
            bad += [i for i, ok in zip(batch_ids, finite, strict=True) if not ok]
    outcomes.append(
        CheckOutcome(
            name="features_finite",
            passed=not bad,
            blocking=True,
            observed=len(bad),
            expected="0 feature vectors with NaN or infinite values",
            details={"image_ids": bad[:MAX_EXAMPLES]},
        )
    )

    identities = Counter(
        zip(table.column("model").to_pylist(), table.column("weights").to_pylist(), strict=True)
    )
    others = {f"{m} | {w}": n for (m, w), n in identities.items() if (m, w) != (model, weights)}
    outcomes.append(
        CheckOutcome(
            name="single_model",
            passed=not others,
            blocking=True,
            observed=len(others),
            expected=f"every row computed by {model} with weights {weights}",
            details={"other_models": others},
        )
    )

    every_pair = len(ids) <= ALL_PAIRS_MAX_ROWS
    found = near_duplicate_pairs(
        ds, query_ids=None if every_pair else list(computed_ids), threshold=threshold
    )
    scope = (
        f"all pairs of {found.rows} images"
        if every_pair
        else f"the {found.queries} images this run computed against all {found.rows}"
    )
    details: dict[str, Any] = {
        "compared": scope,
        "pairs": [{"image_a": a, "image_b": b, "cosine": c} for a, b, c in found.examples],
    }
    if random_init:
        details["note"] = (
            "weights are random-init: random features make every pair of images look alike, "
            "so this check only means something with trained weights (RESNET50_WEIGHTS)"
        )
    outcomes.append(
        CheckOutcome(
            name="near_duplicate_images",
            passed=found.count == 0,
            blocking=False,
            observed=found.count,
            expected=f"no two images with feature cosine similarity >= {threshold} ({scope})",
            details=details,
        )
    )
    return outcomes


# -- training_json -------------------------------------------------------------------------


def check_training_json(
    store: ObjectStore, uri: str, expected_records: int, *, decode: bool = True
) -> list[CheckOutcome]:
    """Checks of a training JSON file (all blocking).

    The file is streamed in chunks of :data:`READ_CHUNK_BYTES` and parsed record by record,
    so memory is one chunk plus one record whatever the file's size.

    Args:
        store: Where the file is.
        uri: The file (usually the staged candidate).
        expected_records: Documents in the multimodal version it was exported from.
        decode: Decode every image (turn off only for very large files).

    Returns:
        ``parses``, ``record_count_matches`` and ``images_decode``.
    """
    records = 0
    images = 0
    failures: list[dict[str, Any]] = []
    parse_error: str | None = None
    try:
        with store.open_read(uri) as stream:
            chunks = iter(lambda: stream.read(READ_CHUNK_BYTES), b"")
            for index, record in enumerate(_stream_json_array(chunks)):
                records += 1
                images += _check_record(record, index, uri, decode, failures)
    except _JSONArrayError as exc:
        parse_error = str(exc)
    return [
        CheckOutcome(
            name="parses",
            passed=parse_error is None,
            blocking=True,
            observed=parse_error or "valid JSON array",
            expected="one JSON array of objects",
        ),
        CheckOutcome(
            name="record_count_matches",
            passed=parse_error is None and records == expected_records,
            blocking=True,
            observed=records,
            expected=f"{expected_records} records, one per document of multimodal_lance",
        ),
        CheckOutcome(
            name="images_decode",
            passed=parse_error is None and not failures,
            blocking=True,
            observed=len(failures),
            expected=f"every record well-formed and each of its {images} hex strings an image",
            details={"images": images, "failures": failures[:MAX_EXAMPLES]},
        ),
    ]


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, expected an object"
    if set(record) != {"instruction", "input", "output"}:
        return f"keys {sorted(record)}, expected ['input', 'instruction', 'output']"
    if not isinstance(record["instruction"], str) or not isinstance(record["input"], list):
        return "instruction must be a string and input a list"
    if not all(isinstance(h, str) for h in record["input"]):
        return "input must hold hex strings"
    return None


def _check_record(
    record: Any, index: int, uri: str, decode: bool, failures: list[dict[str, Any]]
) -> int:
    """Check one training record, appending its problems to ``failures``; return its images."""
    problem = _record_problem(record)
    if problem is not None:
        failures.append({"record": index, "problem": problem})
        return 0
    for slot, hexed in enumerate(record["input"] if decode else []):
        try:
            probe_image(bytes.fromhex(hexed), f"{uri} record #{index} input[{slot}]")
        except ValueError as exc:  # not hex; InvalidImageError is not a ValueError
            failures.append({"record": index, "input": slot, "problem": f"not hex: {exc}"})
        except InvalidImageError as exc:
            failures.append({"record": index, "input": slot, "problem": exc.problem})
    return len(record["input"])


#: Bytes read from the training JSON at a time.
READ_CHUNK_BYTES = 8 * 1024 * 1024
#: Bytes of one record the training JSON check holds at most while it looks for the record's
#: end; a record larger than this is reported as unparsable instead of filling memory.
MAX_RECORD_BYTES = 256 * 1024 * 1024


class _JSONArrayError(ValueError):
    """A JSON array that does not parse, with the line and column (1-based) of the fault."""

    def __init__(self, msg: str, line: int, column: int) -> None:
        super().__init__(f"{msg} at line {line} column {column}")
        self.msg, self.line, self.column = msg, line, column


def _stream_json_array(
    chunks: Iterable[bytes], max_record_bytes: int = MAX_RECORD_BYTES
) -> Iterator[Any]:
    """Yield the elements of a JSON array read as a stream of byte chunks, one at a time.

    Memory is one chunk plus the largest element, whatever the file's size: consumed text is
    dropped from the buffer, and an element split across chunks is decoded again once more
    text arrived.

    Raises:
        _JSONArrayError: The text is not one JSON array (with line and column).
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    source = iter(chunks)
    text, i, eof, lines_dropped = "", 0, False, 0

    def read_more() -> bool:
        nonlocal text, i, eof, lines_dropped
        if eof:
            return False
        chunk = next(source, None)
        lines_dropped += text.count("\n", 0, i)
        text = text[i:] + (utf8.decode(b"", final=True) if chunk is None else utf8.decode(chunk))
        i, eof = 0, chunk is None
        return True

    def fail(msg: str, pos: int) -> _JSONArrayError:
        line = lines_dropped + text.count("\n", 0, pos) + 1
        return _JSONArrayError(msg, line, pos - text.rfind("\n", 0, pos))

    def skip() -> None:
        nonlocal i
        while True:
            while i < len(text) and text[i] in " \t\r\n":
                i += 1
            if i < len(text) or not read_more():
                return

    def expect_end() -> None:
        skip()
        if i != len(text):
            raise fail("extra data after the array", i)

    skip()
    if i >= len(text) or text[i] != "[":
        raise fail("expected '['", i)
    i += 1
    skip()
    if i < len(text) and text[i] == "]":
        i += 1
        expect_end()
        return
    while True:
        while True:
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                if len(text) - i > max_record_bytes or not read_more():
                    raise fail(exc.msg, exc.pos) from exc
                continue
            if end == len(text) and read_more():  # a number may go on in the next chunk
                continue
            break
        yield value
        i = end
        skip()
        if i < len(text) and text[i] == ",":
            i += 1
            skip()
            continue
        if i < len(text) and text[i] == "]":
            i += 1
            expect_end()
            return
        raise fail("expected ',' or ']'", i)


__all__ = [
    "CheckOutcome",
    "blocking_failures",
    "check_images",
    "check_multimodal",
    "check_texts",
    "check_training_json",
]
