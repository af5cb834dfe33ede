r"""Shards of the training JSON: what each one holds, its name, and how one is written.

The training JSON is ``[`` + ``\n`` + record + (``,\n`` + record)* + ``\n]\n``. A shard
holds the records of a run of rows of one ``multimodal_lance`` fragment, each preceded by
its separator: ``[\n`` before the very first record of the file (the *head* shard),
``,\n`` before every other. So the file is the shards concatenated in fragment order, then
``\n]\n`` (:mod:`vlm_lake.training.assemble`), byte for byte what the single-stream export
writes (:func:`vlm_lake.training.export_json.export_training_json`) when the curation
excludes nothing. Excluded documents get no record and excluded images are left out of
theirs; when every document of the first shards is excluded, the first shard with records
is written in its head form (:mod:`vlm_lake.training.sharded_export`).

A shard's name is the digest of everything its bytes depend on: the fragment's metadata
(data files and deletion file, which Lance never rewrites in place), the row range, the
head flag, the columns, :data:`SHARD_FORMAT` and, when the curation excludes rows of its
range, the digest of those exclusions (:func:`exclusion_digest`: only the shards whose
rows a change of exclusions touches get new names). An unchanged fragment therefore keeps its
shard's name from one export to the next, and an incremental export rewrites only the
shards whose names are new (docs/scale.md, "Export at scale").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow as pa

from vlm_lake.curation.exclusion_set import NO_EXCLUSIONS, Exclusions
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io, reads
from vlm_lake.tables.contracts import image_columns, image_id_columns
from vlm_lake.training.export_json import format_record

log = logging.getLogger(__name__)

#: Bumped whenever the alpaca record format changes, so that no older shard is reused.
SHARD_FORMAT = "alpaca-hex/1"

#: A shard holds about this many bytes of JSON (estimated from the fragment's file sizes;
#: hex doubles the image bytes). Large enough for S3's 5 MiB minimum part, small enough
#: that one task writes it in seconds and an incremental run rewrites little.
SHARD_TARGET_BYTES = 64 * 1024 * 1024

#: Rows per shard when a fragment's file sizes are not recorded.
DEFAULT_SHARD_ROWS = 1000

HEAD = b"[\n"
SEPARATOR = b",\n"
TAIL = b"\n]\n"


class RecordFormat:
    """How records are framed in a file assembled from shards, and how one is encoded.

    The file is ``head`` + record + (``separator`` + record)* + ``tail``, or ``empty``
    when there is no record. :meth:`encoder` runs where the shard is written (a Spark
    task or a thread) and may write files beside the records (the LLaMA-Factory images).

    Attributes:
        name: Goes into every shard's name: change it when the bytes change.
        head: Before the file's first record.
        separator: Before every other record.
        tail: After the last record.
        empty: The whole file when there is no record.
        size_factor: Bytes of output per byte of stored image (hex: 2), for shard sizes.
    """

    name = SHARD_FORMAT
    head, separator, tail, empty = HEAD, SEPARATOR, TAIL, b"[\n]\n"
    size_factor = 2.0

    def encoder(self, store: ObjectStore) -> Callable[[str, list[bytes | None]], bytes]:
        """The function that turns one document into its record's bytes (no framing)."""
        del store  # the alpaca records carry their images as hex
        return lambda text, images: format_record(text, images).encode("utf-8")


#: The seed's alpaca-style JSON array with images as hex.
ALPACA = RecordFormat()


@dataclass(frozen=True)
class ShardUnit:
    r"""The rows one shard holds: ``rows`` live rows of a fragment from ``offset``.

    Attributes:
        fragment_id: The ``multimodal_lance`` fragment.
        offset: First live row of the fragment (deleted rows do not count).
        rows: Records in the shard.
        head: Whether the shard starts the file (``[\n`` instead of ``,\n``).
        name: The shard's content name (see the module docstring).
    """

    fragment_id: int
    offset: int
    rows: int
    head: bool
    name: str


@dataclass(frozen=True)
class ShardInfo:
    """One written shard, as the manifest lists it.

    Attributes:
        name: Content name (the file is ``<shards root>/<name>.jsonpart``).
        fragment_id: Source fragment.
        offset: First live row of the fragment.
        records: Records (one per row the curation did not exclude).
        images: Hex-encoded images in the records.
        bytes: Size of the shard file.
        sha256: Digest of the shard file.
        head: Whether the shard starts the file.
        written_at_version: ``multimodal_lance`` version of the export that wrote it.
        excluded_documents: Rows of the range the curation policy left out.
        excluded_images: Images left out of the records (their documents are kept).
    """

    name: str
    fragment_id: int
    offset: int
    records: int
    images: int
    bytes: int
    sha256: str
    head: bool
    written_at_version: int
    excluded_documents: int = 0
    excluded_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        return asdict(self)


SHARD_SUFFIX = ".jsonpart"


def shard_uri(root: str, name: str) -> str:
    """The shard file called ``name`` under ``root``."""
    return f"{root.rstrip('/')}/{name}{SHARD_SUFFIX}"


def shard_files(store: ObjectStore, root: str) -> dict[str, tuple[str, int]]:
    """The shard files under ``root`` (one listing): ``name -> (uri, size)``."""
    files = {}
    for info in store.list(root):
        base = info.uri.rsplit("/", 1)[-1]
        if base.endswith(SHARD_SUFFIX):
            files[base[: -len(SHARD_SUFFIX)]] = (info.uri, info.size)
    return files


def export_columns(schema: pa.Schema) -> list[str]:
    """The columns a shard reads: ``text`` and every image slot."""
    return ["text", *image_columns(len(image_id_columns(schema)))]


def _live_rows(fragment: Any, meta: dict[str, Any]) -> int:
    deletion = meta.get("deletion_file") or {}
    deleted = deletion.get("num_deleted_rows")
    if meta.get("physical_rows") is not None and (not deletion or deleted is not None):
        return int(meta["physical_rows"]) - int(deleted or 0)
    return int(fragment.count_rows())


def _rows_per_shard(meta: dict[str, Any], target_bytes: int, factor: float) -> int:
    sizes = [f.get("file_size_bytes") for f in meta.get("files", [])]
    physical = int(meta.get("physical_rows") or 0)
    if not sizes or None in sizes or physical == 0:
        return DEFAULT_SHARD_ROWS
    per_row = factor * sum(sizes) / physical + 64  # the records' overhead: a little JSON
    return max(1, int(target_bytes // per_row))


def _name(
    meta: dict[str, Any],
    offset: int,
    rows: int,
    head: bool,
    columns: list[str],
    fmt: str,
) -> str:
    identity = {
        "format": fmt,
        "fragment": meta,
        "offset": offset,
        "rows": rows,
        "head": head,
        "columns": columns,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def plan_shards(
    ds: Any, target_bytes: int = SHARD_TARGET_BYTES, fmt: RecordFormat = ALPACA
) -> list[ShardUnit]:
    """The shards of one version of ``multimodal_lance``, in file order.

    Reads fragment metadata only (no rows): the driver's work grows with the number of
    fragments, not of documents.

    Args:
        ds: The dataset, pinned to the version being exported.
        target_bytes: About how many bytes of JSON one shard holds (a positive number).
        fmt: The record format (part of every shard's name).
    """
    if target_bytes < 1:
        raise ValueError(f"target_bytes={target_bytes!r} must be a positive number of bytes")
    columns = export_columns(ds.schema)
    units: list[ShardUnit] = []
    for fragment in ds.get_fragments():
        meta = fragment.metadata.to_json()
        live = _live_rows(fragment, meta)
        step = _rows_per_shard(meta, target_bytes, fmt.size_factor)
        for offset in range(0, live, step):
            rows = min(step, live - offset)
            head = not units
            name = _name(meta, offset, rows, head, columns, fmt.name)
            units.append(ShardUnit(fragment.fragment_id, offset, rows, head, name))
    return units


def exclusion_digest(ds: Any, unit: ShardUnit, exclusions: Exclusions) -> str:
    """Digest of the exclusions that touch the rows of ``unit`` ("" when none does).

    Reads the range's ``docid`` and image id columns only (tens of bytes per row).
    """
    fragment = ds.get_fragment(unit.fragment_id)
    columns = ["docid", *image_id_columns(ds.schema)]
    hits: set[str] = set()
    stop = unit.offset + unit.rows
    for batch in reads.read_ranges(fragment, columns, start=unit.offset, stop=stop):
        for name in columns:
            wanted = exclusions.documents if name == "docid" else exclusions.images
            if wanted:
                kind = "d" if name == "docid" else "i"
                values = batch.column(name).to_pylist()
                hits.update(f"{kind}\0{v}" for v in values if v in wanted)
    if not hits:
        return ""
    return hashlib.sha256("\n".join(sorted(hits)).encode()).hexdigest()[:32]


def with_exclusions(unit: ShardUnit, digest: str) -> ShardUnit:
    """``unit`` named for the exclusions that touch it (unchanged when none does)."""
    if not digest:
        return unit
    name = hashlib.sha256(f"{unit.name}/exclusions/{digest}".encode()).hexdigest()[:32]
    return replace(unit, name=name)


def _records(
    ds: Any, unit: ShardUnit, columns: list[str], exclusions: Exclusions
) -> Iterator[tuple[str, list[Any], int] | None]:
    """Each row's text, image slots and images left out; None for an excluded document."""
    fragment = ds.get_fragment(unit.fragment_id)
    if fragment is None:
        raise ValueError(
            f"fragment_id={unit.fragment_id} is not in {ds.uri!r} version {ds.version}"
        )
    ids = ["docid", *image_id_columns(ds.schema)] if exclusions else []
    batches = reads.read_ranges(
        fragment, columns + ids, start=unit.offset, stop=unit.offset + unit.rows
    )
    for batch in batches:
        texts = batch.column("text").to_pylist()
        slots = [batch.column(c).to_pylist() for c in columns[1:]]
        keys = [batch.column(c).to_pylist() for c in ids]
        for i, text in enumerate(texts):
            images = [slot[i] for slot in slots]
            if not keys:
                yield text, images, 0
                continue
            if keys[0][i] in exclusions.documents:
                yield None
                continue
            left_out = [
                k[i] in exclusions.images and images[n] is not None for n, k in enumerate(keys[1:])
            ]
            yield (
                text,
                [None if out else img for img, out in zip(images, left_out, strict=True)],
                sum(left_out),
            )


def write_shard(
    store: ObjectStore,
    multimodal_uri: str,
    version: int,
    unit: ShardUnit,
    root: str,
    fmt: RecordFormat = ALPACA,
    exclusions: Exclusions | None = None,
    ds: Any = None,
) -> ShardInfo:
    """Write one shard (atomically: a failed write leaves no file) and describe it.

    Runs in a Spark task or a local thread; opens Lance itself (never a handle from
    another process), unless given ``ds``, that version already open in this process.
    Documents in ``exclusions`` get no record; excluded images are left
    out of their documents' records.

    Raises:
        RuntimeError: The fragment held another number of rows than planned.
    """
    if ds is None:
        ds = lance_io.open_dataset(multimodal_uri, store.storage_options(multimodal_uri), version)
    columns = export_columns(ds.schema)
    encode = fmt.encoder(store)
    digest = hashlib.sha256()
    records = images = size = dropped_docs = dropped_images = 0
    with store.open_atomic_writer(shard_uri(root, unit.name)) as out:
        for row in _records(ds, unit, columns, exclusions or NO_EXCLUSIONS):
            if row is None:
                dropped_docs += 1
                continue
            text, imgs, left_out = row
            lead = fmt.head if unit.head and records == 0 else fmt.separator
            data = lead + encode(text, imgs)
            out.write(data)
            digest.update(data)
            size += len(data)
            records += 1
            images += sum(img is not None for img in imgs)
            dropped_images += left_out
        if records + dropped_docs != unit.rows:
            raise RuntimeError(
                f"fragment {unit.fragment_id} of {multimodal_uri!r} version {version} gave "
                f"{records + dropped_docs} rows from offset {unit.offset}, planned "
                f"{unit.rows}; the shard was not written"
            )
    return ShardInfo(
        unit.name,
        unit.fragment_id,
        unit.offset,
        records,
        images,
        size,
        digest.hexdigest(),
        unit.head,
        version,
        dropped_docs,
        dropped_images,
    )
