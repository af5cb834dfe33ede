"""The training export at scale: shards written by tasks, reused when unchanged, assembled.

The driver plans shards from fragment metadata (:func:`~vlm_lake.training.shards.
plan_shards`), keeps every shard whose name a previous manifest lists and whose file is
still there, and has the others written: by Spark tasks (``engine="spark"``, one task per
shard, the Lance rows read in the executors) or by a local thread pool. Then it assembles
the candidate file (:mod:`~vlm_lake.training.assemble`) and writes the candidate manifest.
The asset checks the shards and promotes file and manifest together; see
docs/scale.md ("Export at scale").
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from vlm_lake.curation.exclusion_set import NO_EXCLUSIONS, Exclusions
from vlm_lake.spark.engine import use_spark
from vlm_lake.spark.unit_job import map_units
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import lance_io, publish
from vlm_lake.training.assemble import AssemblyReport, assemble
from vlm_lake.training.export_json import promote, staging_uri
from vlm_lake.training.manifest import ExportManifest, manifest_uri, read_manifest, shards_root
from vlm_lake.training.replay import table_read
from vlm_lake.training.shards import (
    ALPACA,
    SHARD_TARGET_BYTES,
    RecordFormat,
    ShardInfo,
    ShardUnit,
    exclusion_digest,
    plan_shards,
    shard_files,
    shard_uri,
    with_exclusions,
    write_shard,
)
from vlm_lake.util.parallel import bounded_parallel_map

log = logging.getLogger(__name__)

#: ``engine="auto"`` writes shards on Spark from this many shards to write.
SPARK_FROM_SHARDS = 8


@dataclass(frozen=True)
class ShardedExport:
    """What one export run made: the candidate file and its manifest (not yet promoted).

    Attributes:
        candidate: The assembled candidate file.
        manifest: The candidate's manifest.
        written: Shards written by this run.
        reused: Shards reused from an earlier export.
        written_names: Names of the shards written by this run.
        engine: Where the shards were written (``local`` or ``spark``).
        assembly: How the candidate was assembled.
        seconds: Wall time of the run.
    """

    candidate: str
    manifest: ExportManifest
    written: int
    reused: int
    written_names: frozenset[str]
    engine: str
    assembly: AssemblyReport
    seconds: float


@dataclass(frozen=True)
class _WriteShard:
    """Picklable: write (or, with exclusions, find) one shard wherever it runs.

    Without exclusions the driver already knows which shards to reuse, and every call
    writes. With exclusions a shard's name depends on the excluded ids among its rows, so
    the task reads the range's ids, names the shard, and writes it only when no earlier
    export has a shard of that name (``reusable``).
    """

    settings: StoreSettings | None
    multimodal_uri: str
    version: int
    root: str
    fmt: RecordFormat
    exclusions: Exclusions = NO_EXCLUSIONS
    reusable: dict[str, dict[str, Any]] = field(default_factory=dict)
    either_head: bool = True  # may reuse the unit's head form (the first pass does)

    def __call__(self, unit: ShardUnit) -> dict[str, Any]:
        store = ObjectStore(self.settings)
        ds = None  # opened here only to read the ids; write_shard reuses it
        if self.exclusions:
            storage = store.storage_options(self.multimodal_uri)
            ds = lance_io.open_dataset(self.multimodal_uri, storage, self.version)
            digest = exclusion_digest(ds, unit, self.exclusions)
            forms = [unit]
            if self.either_head and not unit.head:
                forms.append(replace(unit, head=True, name=_head_name(unit)))
            for form in (with_exclusions(f, digest) for f in forms):
                if form.name in self.reusable:
                    return {"info": self.reusable[form.name], "written": False}
            unit = with_exclusions(unit, digest)
        info = write_shard(
            store,
            self.multimodal_uri,
            self.version,
            unit,
            self.root,
            self.fmt,
            self.exclusions,
            ds,
        )
        return {"info": info.to_dict(), "written": True}


def _reusable(store: ObjectStore, out_uri: str, fmt: RecordFormat) -> dict[str, ShardInfo]:
    """Shards an earlier export listed (published or candidate) whose files still exist."""
    known: dict[str, ShardInfo] = {}
    for uri in (staging_uri(manifest_uri(out_uri)), manifest_uri(out_uri)):
        previous = read_manifest(store, uri)
        if previous is not None and previous.shard_format == fmt.name:
            known.update({s.name: s for s in previous.shards})
    if not known:
        return {}
    present = shard_files(store, shards_root(out_uri))
    return {
        name: info
        for name, info in known.items()
        if name in present and present[name][1] == info.bytes
    }


def _write_shards(
    spark: Any, todo: list[ShardUnit], write: _WriteShard
) -> list[tuple[ShardInfo, bool]]:
    """Each unit's shard and whether this run wrote it, in the units' order."""
    if spark is not None:
        results = map_units(spark, write, todo)
    else:
        workers = max(1, min(len(todo), os.cpu_count() or 1))
        results = list(bounded_parallel_map(write, todo, workers=workers))
    return [(ShardInfo(**r["info"]), bool(r["written"])) for r in results]


def _head_name(unit: ShardUnit) -> str:
    """The name of ``unit``'s shard written as the head one (it opens the file)."""
    return hashlib.sha256(f"{unit.name}/head".encode()).hexdigest()[:32]


def _fix_heads(
    shards: list[ShardInfo],
    units: list[ShardUnit],
    reusable: dict[str, ShardInfo],
    write: _WriteShard,
    written: dict[str, ShardInfo],
) -> list[ShardInfo]:
    """Make the first shard that holds records, and only it, a head shard.

    Only with exclusions can the planned head shard hold no record (all its documents left
    out): the first shard with records is then used (or written) in its head form, under
    another name; a later export that needs the plain form again gets it back.
    """
    shards = list(shards)
    if write.fmt.head == write.fmt.separator:  # JSON Lines: every shard frames alike
        return shards
    filled = [i for i, s in enumerate(shards) if s.records]
    for i in filled[1:] if filled and filled[0] == 0 else filled:
        want_head = i == filled[0]
        if shards[i].head == want_head:
            continue
        unit = units[i]
        name = _head_name(unit) if want_head else unit.name
        # without exclusions the driver knows the name; with them the task looks it up
        info = None if write.exclusions else reusable.get(name)
        if info is None:
            result = replace(write, either_head=False)(replace(unit, head=want_head, name=name))
            info = ShardInfo(**result["info"])
            if result["written"]:
                written[info.name] = info
        shards[i] = info
    return shards


def _engine(engine: str, spark: Callable[[], Any] | None, shards_to_write: int) -> str:
    return "spark" if use_spark(engine, spark, shards_to_write, SPARK_FROM_SHARDS) else "local"


def export_sharded(
    store: ObjectStore,
    multimodal_uri: str,
    out_uri: str,
    *,
    spark: Callable[[], Any] | None = None,
    engine: str = "auto",
    version: int | str | None = "published",
    target_bytes: int = SHARD_TARGET_BYTES,
    fmt: RecordFormat = ALPACA,
    exclusions: Exclusions = NO_EXCLUSIONS,
) -> ShardedExport:
    """Write the training JSON's candidate from shards, rewriting only changed ones.

    Args:
        store: Object store of the lake (shards, candidate and manifest live beside
            ``out_uri``).
        multimodal_uri: ``multimodal.lance`` URI.
        out_uri: The published file's URI (``training_data.json``); the candidate goes to
            ``staging_uri(out_uri)``.
        spark: Returns the SparkSession (called only when shards are written on Spark).
        engine: ``auto`` (Spark from :data:`SPARK_FROM_SHARDS` shards to write, when a
            session is given), ``local`` (a thread pool) or ``spark``.
        version: Version or tag of the multimodal dataset (default: the published one).
        target_bytes: About how many bytes one shard holds.
        fmt: The record format (default: the seed's alpaca JSON array).
        exclusions: What the curation policy leaves out (default: nothing).

    Returns:
        A :class:`ShardedExport`; nothing is published yet.
    """
    started = time.perf_counter()
    storage = store.storage_options(multimodal_uri)
    ds = publish.open_version(multimodal_uri, storage, version)
    units = plan_shards(ds, target_bytes, fmt)
    reusable = _reusable(store, out_uri, fmt)
    if exclusions:  # names depend on the rows' exclusions: every unit is a (cheap) task
        todo = units
    else:
        todo = [u for u in units if u.name not in reusable and _head_name(u) not in reusable]
    chosen = _engine(engine, spark, len(todo))
    log.info(
        "training export of version %d: %d shards, %d to %s (%s)",
        ds.version,
        len(units),
        len(todo),
        "check against the exclusions" if exclusions else "write",
        chosen,
    )
    root = shards_root(out_uri)
    known = {k: v.to_dict() for k, v in reusable.items()} if exclusions else {}
    write = _WriteShard(store.settings, multimodal_uri, ds.version, root, fmt, exclusions, known)
    session = spark() if chosen == "spark" and spark else None
    done = dict(zip((u.name for u in todo), _write_shards(session, todo, write), strict=True))
    written = {info.name: info for info, fresh in done.values() if fresh}
    shards = [
        done[u.name][0] if u.name in done else reusable.get(u.name) or reusable[_head_name(u)]
        for u in units
    ]
    shards = _fix_heads(shards, units, reusable, write, written)
    candidate = staging_uri(out_uri)
    filled = [s for s in shards if s.bytes]  # a shard whose documents were all left out is empty
    assembly = assemble(
        store, [shard_uri(root, s.name) for s in filled], [s.bytes for s in filled], candidate, fmt
    )
    read = table_read(ds, multimodal_uri, version if isinstance(version, str) else None)
    manifest = ExportManifest.build(
        out_uri,
        multimodal_uri,
        ds.version,
        read.rows,
        shards,
        assembly.bytes,
        fmt.name,
        [read.to_dict()],
        exclusions.lineage() if exclusions.version is not None else None,
    )
    manifest.write(store, staging_uri(manifest_uri(out_uri)))
    return ShardedExport(
        candidate,
        manifest,
        sum(s.name in written for s in shards),
        sum(s.name not in written for s in shards),
        frozenset(written),
        chosen,
        assembly,
        time.perf_counter() - started,
    )


def publish_export(store: ObjectStore, out_uri: str, manifest: ExportManifest) -> int:
    """Move the checked candidate and its manifest over the published names.

    The file goes first, then the manifest (a reader that finds the new manifest finds the
    new file); then the shards no longer listed are deleted.

    Returns:
        The number of shard files deleted.
    """
    promote(store, staging_uri(out_uri), out_uri)
    manifest.write(store, manifest_uri(out_uri))
    store.delete(staging_uri(manifest_uri(out_uri)))
    keep = {s.name for s in manifest.shards}
    files = shard_files(store, shards_root(out_uri))
    stale = [uri for name, (uri, _) in files.items() if name not in keep]
    for uri in stale:
        store.delete(uri)
    if stale:
        log.info("deleted %d shards no export lists any more", len(stale))
    return len(stale)
