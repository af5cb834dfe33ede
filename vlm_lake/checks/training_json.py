"""Checks of a training JSON file: it parses, has one record per document, every image decodes.

The file is streamed in chunks of :data:`READ_CHUNK_BYTES` and parsed record by record
(:mod:`vlm_lake.checks.json_stream`), so memory is one chunk plus one record whatever the
file's size.
"""

from __future__ import annotations

from typing import Any

from vlm_lake.checks.json_stream import JSONArrayError, stream_json_array
from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec
from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.decode import probe_image
from vlm_lake.store.object_store import ObjectStore

#: Bytes read from the training JSON at a time.
READ_CHUNK_BYTES = 8 * 1024 * 1024

PARSES = CheckSpec("training_json", "parses", True, "The file is one JSON array.")
RECORD_COUNT_MATCHES = CheckSpec(
    "training_json",
    "record_count_matches",
    True,
    "One record per document of multimodal_lance.",
)
IMAGES_DECODE = CheckSpec(
    "training_json", "images_decode", True, "Every hex string decodes to an image."
)
SHARDS_MATCH_MANIFEST = CheckSpec(
    "training_json",
    "shards_match_manifest",
    True,
    "Every shard the file is assembled from has the bytes and sha256 its manifest lists.",
)
EXCLUDED_SHARE = CheckSpec(
    "training_json",
    "excluded_share",
    True,
    "The curation policy left out at most its max_excluded_share of the documents and of "
    "the images they name.",
)
SPECS = (PARSES, RECORD_COUNT_MATCHES, IMAGES_DECODE, SHARDS_MATCH_MANIFEST, EXCLUDED_SHARE)


def check_training_json(
    store: ObjectStore, uri: str, expected_records: int, *, decode: bool = True
) -> list[CheckOutcome]:
    """Checks of a training JSON file (:data:`SPECS`, all blocking).

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
            for index, record in enumerate(stream_json_array(chunks)):
                records += 1
                images += check_record(record, index, uri, decode, failures)
    except JSONArrayError as exc:
        parse_error = str(exc)
    return [
        PARSES.outcome(
            parse_error is None, parse_error or "valid JSON array", "one JSON array of objects"
        ),
        RECORD_COUNT_MATCHES.outcome(
            parse_error is None and records == expected_records,
            records,
            f"{expected_records} records, one per document of multimodal_lance",
        ),
        IMAGES_DECODE.outcome(
            parse_error is None and not failures,
            len(failures),
            f"every record well-formed and each of its {images} hex strings an image",
            {"images": images, "failures": failures[:MAX_EXAMPLES]},
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


def check_record(
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
