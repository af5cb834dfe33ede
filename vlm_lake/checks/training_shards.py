r"""The training JSON's checks, read shard by shard in parallel (Spark tasks or threads).

A shard is the run of records ``lead record (,\n record)*`` with lead ``[\n`` or
``,\n``; given the lead replaced by ``[\n`` and ``\n]`` appended, it is one JSON array.
The assembled file is ``shard_1 ... shard_n \n]\n``, so it parses exactly when every
shard parses, the first shard is the head, and the file has the manifest's size and
ends with the tail: what :func:`check_training_export` verifies, with each shard's bytes
against its sha256 in the manifest. Same check names as :func:`check_training_json`,
plus ``shards_match_manifest``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from vlm_lake.checks.json_stream import JSONArrayError, stream_json_array
from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome
from vlm_lake.checks.training_json import (
    IMAGES_DECODE,
    PARSES,
    READ_CHUNK_BYTES,
    RECORD_COUNT_MATCHES,
    SHARDS_MATCH_MANIFEST,
    check_record,
)
from vlm_lake.spark.unit_job import map_units
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.training.manifest import ExportManifest, shards_root
from vlm_lake.training.shards import HEAD, TAIL, ShardInfo, shard_files, shard_uri
from vlm_lake.util.parallel import bounded_parallel_map


@dataclass(frozen=True)
class _CheckShard:
    """Picklable: check one shard (index of its first record, entry) wherever it runs."""

    settings: StoreSettings | None
    root: str
    decode: bool

    def __call__(self, item: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        first, entry = item
        info = ShardInfo(**entry)
        uri = shard_uri(self.root, info.name)
        store = ObjectStore(self.settings)
        digest = hashlib.sha256()
        size = records = images = 0
        failures: list[dict[str, Any]] = []
        parse_error = None

        def chunks() -> Iterator[bytes]:
            nonlocal size
            with store.open_read(uri) as stream:
                for n, chunk in enumerate(iter(lambda: stream.read(READ_CHUNK_BYTES), b"")):
                    digest.update(chunk)
                    size += len(chunk)
                    yield HEAD + chunk[2:] if n == 0 else chunk
            if size == 0:  # every document of the shard was left out by the curation
                yield HEAD
            yield b"\n]"

        try:
            for index, record in enumerate(stream_json_array(chunks()), start=first):
                records += 1
                images += check_record(record, index, uri, self.decode, failures)
        except JSONArrayError as exc:
            parse_error = f"{uri}: {exc}"
        matches = size == info.bytes and digest.hexdigest() == info.sha256
        return {
            "records": records,
            "images": images,
            "failures": failures[:MAX_EXAMPLES],
            "failed": len(failures),
            "parse_error": parse_error,
            "mismatch": None if matches else {"shard": uri, "bytes": size, "sha256_ok": False},
        }


def _frame_problem(store: ObjectStore, uri: str, manifest: ExportManifest) -> str | None:
    """What is wrong with the assembled file's size, head and tail, if anything."""
    size = sum(o.size for o in store.list(uri))
    if size != manifest.bytes:
        return f"{uri} has {size} bytes, the manifest says {manifest.bytes}"
    head_ok = store.read_range(uri, 0, len(HEAD)) == HEAD
    tail_ok = store.read_range(uri, size - len(TAIL), size) == TAIL
    if not (head_ok and tail_ok):
        return f"{uri} does not start with [\\n and end with \\n]\\n"
    heads = [s.head for s in manifest.shards if s.records]  # empty shards open nothing
    if heads and (not heads[0] or any(heads[1:])):
        return f"the manifest of {uri} has no head shard first: heads {heads[:5]}"
    return None


def _unread_mismatches(
    store: ObjectStore, root: str, shards: list[ShardInfo]
) -> list[dict[str, Any]]:
    """Shards not read again (reused ones): confirmed present with their size by a listing."""
    if not shards:
        return []
    sizes = {name: size for name, (_, size) in shard_files(store, root).items()}
    return [
        {"shard": shard_uri(root, s.name), "bytes": sizes.get(s.name)}
        for s in shards
        if sizes.get(s.name) != s.bytes
    ]


def check_training_export(
    store: ObjectStore,
    uri: str,
    manifest: ExportManifest,
    expected_records: int,
    *,
    spark: Callable[[], Any] | None = None,
    decode: bool = True,
    read: Collection[str] | None = None,
) -> list[CheckOutcome]:
    """Check an assembled training JSON through its shards, in parallel.

    Args:
        store: Where the file and its shards are.
        uri: The assembled file (usually the candidate).
        manifest: Its manifest (shards in file order).
        expected_records: Documents in the multimodal version it was exported from.
        spark: Returns a SparkSession to check the shards as Spark tasks; None for threads.
        decode: Decode every image.
        read: Names of the shards to read and check record by record (default: all). The
            others (shards an earlier, checked export wrote and this one reused) are
            confirmed by their size in one listing, and counted from the manifest.

    Returns:
        ``parses``, ``record_count_matches``, ``images_decode``, ``shards_match_manifest``.
    """
    firsts = [sum(s.records for s in manifest.shards[:i]) for i in range(len(manifest.shards))]
    chosen = [
        (f, s)
        for f, s in zip(firsts, manifest.shards, strict=True)
        if read is None or s.name in read
    ]
    unread = [s for s in manifest.shards if read is not None and s.name not in read]
    items = [(f, s.to_dict()) for f, s in chosen]
    root = shards_root(manifest.output)
    check = _CheckShard(store.settings, root, decode)
    if spark is not None and len(items) > 1:
        results = map_units(spark(), check, items)
    else:
        workers = max(1, min(len(items), os.cpu_count() or 1))
        results = list(bounded_parallel_map(check, items, workers=workers))
    frame = _frame_problem(store, uri, manifest)
    parse_errors = [r["parse_error"] for r in results if r["parse_error"]]
    parse_errors += [frame] if frame else []
    records = sum(r["records"] for r in results) + sum(s.records for s in unread)
    images = sum(r["images"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    failed = sum(r["failed"] for r in results)
    mismatches = [r["mismatch"] for r in results if r["mismatch"]]
    mismatches += _unread_mismatches(store, root, unread)
    how = f"{len(results)} shards read in parallel, {len(unread)} reused ones confirmed by size"
    return [
        PARSES.outcome(
            not parse_errors,
            parse_errors[0] if parse_errors else "valid JSON array",
            f"one JSON array of objects ({how})",
        ),
        RECORD_COUNT_MATCHES.outcome(
            not parse_errors and records == expected_records,
            records,
            f"{expected_records} records, one per document of multimodal_lance",
        ),
        IMAGES_DECODE.outcome(
            not parse_errors and not failed,
            failed,
            f"every record read well-formed and each of its {images} hex strings an image",
            {"images": images, "failures": failures[:MAX_EXAMPLES]},
        ),
        SHARDS_MATCH_MANIFEST.outcome(
            not mismatches,
            len(mismatches),
            f"each of the {len(manifest.shards)} shards has the bytes (and, if read, the "
            "sha256) of the manifest",
            {"mismatches": mismatches[:MAX_EXAMPLES]},
        ),
    ]
