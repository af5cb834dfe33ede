"""The Lance layout of the lake, each choice measured against its alternative.

Every measurement runs on the same image table: the ``images.lance`` that
:meth:`~benchmarks.common.Context.lake` built through the pipeline, copied into scratch
datasets that differ in one setting only ("ours" is the pipeline's setting). Reads are
warm: the files were just written (page cache), each read runs once untimed, then the
best of five (three for the slow ones; one if a run takes over a second) counts.

* **image_data encoding and compression**: ours (plain ``binary``, field metadata
  ``lance-encoding:compression=none``) vs Lance blob encoding (``large_binary`` with
  ``lance-encoding:blob``; in pylance 14 that column is a ``lance.blob.v2`` extension whose
  ``take``/``to_table`` return descriptors, so its bytes come from ``read_blobs`` or
  ``blob_handling="all_binary"``) vs Lance's default compression vs zstd: write time, size,
  100 random rows' bytes, a scan of the metadata columns, a scan of every image's bytes;
* **rows per fragment** (ours vs 1k and 64k): write time, fragments, Spark partitions and
  a Spark read of every image through our data source (one partition per fragment), 100
  random rows, 100 id lookups;
* **scalar BTREE index** on ``image_id`` (images) and ``docid`` (texts, multimodal): 100
  one-at-a-time lookups with and without it (``use_scalar_index``), its build time, and an
  upsert (``merge_insert`` of 20 rows, 10 of them updates; ``use_index``) with and without;
* **compaction** after 50 incremental ingests of 20 rows (``lance_io.merge_batches``, as
  the ingest does): random rows, metadata scan, id lookups and an upsert at the most small
  fragments the policy leaves, after all 50, and after 50 with only the index updated, each
  against the compacted table; how each ingest slows down; and the upkeep's own cost.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.access import warm
from benchmarks.common import MB, Context, Row, row, timed
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.tables.layout import IMAGES_LAYOUT

log = logging.getLogger(__name__)

#: Random rows / keys per read measurement.
SAMPLE = 100
#: Rows per fragment compared (the pipeline's own value is added if it is not one of them).
FRAGMENT_ROWS = (1024, 8 * 1024, 64 * 1024)
#: Incremental ingests before compaction, and rows per ingest.
INCREMENTS, INCREMENT_ROWS = 50, 20


def dir_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def sample_positions(n: int, k: int = SAMPLE, seed: int = 0) -> list[int]:
    """``k`` distinct random positions below ``n`` (fixed seed, in random order)."""
    return random.Random(seed).sample(range(n), min(k, n))


def with_image_data(table: pa.Table, field: pa.Field) -> pa.Table:
    """``table`` with its ``image_data`` column re-typed and re-labelled as ``field``."""
    i = table.schema.get_field_index("image_data")
    return table.set_column(i, field, table.column(i).cast(field.type))


def interleaved(fns: dict[Any, Any], repeats: int) -> dict[Any, float]:
    """Best seconds of each of ``fns``, timed in turns (one round each, ``repeats`` rounds).

    Turns, not one function after another, so that a burst of load on this shared machine
    slows every variant alike instead of the one that happened to run then.
    """
    best: dict[Any, float] = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn)[1])
    return best


def _readers(ds: Any, blob: bool, positions: list[int], meta: list[str]) -> dict[str, Any]:
    """The reads measured for one ``image_data`` variant (blob columns read their own way)."""
    if blob:  # take/to_table return blob descriptors; the bytes come from these
        return {
            "take": lambda: ds.read_blobs("image_data", indices=positions),
            "meta": lambda: ds.to_table(columns=meta),
            "bytes": lambda: ds.to_table(columns=["image_data"], blob_handling="all_binary"),
        }
    return {
        "take": lambda: ds.take(positions, columns=["image_data"]),
        "meta": lambda: ds.to_table(columns=meta),
        "bytes": lambda: ds.to_table(columns=["image_data"]),
    }


_MEASURES = {
    "write": ("write the table", "s"),
    "size": ("size on disk", "MB"),
    "take": (f"{SAMPLE} random rows' bytes", "s"),
    "meta": ("scan of the metadata columns", "s"),
    "bytes": ("scan of every image's bytes", "s"),
}


def _encodings(table: pa.Table, work: Path, positions: list[int]) -> list[Row]:
    """Ours (plain binary, compression none) vs blob encoding, default and zstd compression."""
    import lance

    fields = {
        "ours": IMAGE_SCHEMA.field("image_data"),
        "blob encoding": pa.field(
            "image_data", pa.large_binary(), False, {"lance-encoding:blob": "true"}
        ),
        "Lance's default compression": pa.field("image_data", pa.binary(), False),
        "zstd": pa.field("image_data", pa.binary(), False, {"lance-encoding:compression": "zstd"}),
    }
    tables = {name: with_image_data(table, field) for name, field in fields.items()}
    uris = {name: str(work / f"encoding-{n}.lance") for n, name in enumerate(fields)}

    def writer(name: str) -> Any:
        def write() -> None:
            shutil.rmtree(uris[name], ignore_errors=True)
            lance.write_dataset(
                tables[name], uris[name], max_rows_per_file=IMAGES_LAYOUT.rows_per_fragment
            )

        return write

    measured: dict[str, dict[str, float]] = {name: {} for name in fields}
    for name, seconds in interleaved({n: writer(n) for n in fields}, 2).items():
        measured[name]["write"] = seconds
    meta = [c for c in table.column_names if c != "image_data"]
    expected = table.column("image_data").take(positions).to_pylist()
    readers: dict[str, dict[str, Any]] = {}
    for name, field in fields.items():
        ds = lance.dataset(uris[name])
        blob = field.metadata is not None and b"lance-encoding:blob" in field.metadata
        readers[name] = _readers(ds, blob, positions, meta)
        got = readers[name]["take"]()
        got = [v for _, v in got] if blob else got.column("image_data").to_pylist()
        assert got == expected, f"{name} did not return the stored bytes"
        measured[name]["size"] = dir_bytes(uris[name]) / MB
    for key, repeats in (("take", 7), ("meta", 7), ("bytes", 3)):
        for name, seconds in interleaved({n: r[key] for n, r in readers.items()}, repeats).items():
            measured[name][key] = seconds
    for uri in uris.values():
        shutil.rmtree(uri, ignore_errors=True)
    rows: list[Row] = []
    for name in fields:
        if name == "ours":
            continue
        for key, (label, unit) in _MEASURES.items():
            rows.append(
                row(
                    f"image_data: {label}, ours (binary, no compression) vs {name}",
                    measured["ours"][key],
                    measured[name][key],
                    unit,
                    higher=False,
                )
            )
    return rows


def write_copy(table: pa.Table, uri: str, **kwargs: Any) -> float:
    """Write ``table`` to a fresh dataset at ``uri``; return the best of two write times."""
    import lance

    def write() -> None:
        shutil.rmtree(uri, ignore_errors=True)
        lance.write_dataset(table, uri, **kwargs)

    return min(timed(write)[1] for _ in range(2))


def _spark_read_seconds(ctx: Context, uri: str) -> tuple[float, int]:
    """Seconds of a Spark read of every image's bytes; and its partitions."""
    from pyspark.sql import functions as F

    from vlm_lake.spark.lance_source import read_lance

    spark = ctx.spark()

    def read() -> int:
        df = read_lance(spark, uri, columns=["image_id", "image_data"])
        return int(df.agg(F.sum(F.length("image_data"))).collect()[0][0])

    partitions = read_lance(spark, uri, columns=["image_id"]).rdd.getNumPartitions()
    return timed(read)[1], partitions  # the JVM and its workers are warm from ctx.lake()


def _fragments(ctx: Context, table: pa.Table, work: Path, positions: list[int]) -> list[Row]:
    import lance

    ours = IMAGES_LAYOUT.rows_per_fragment
    n_rows = table.num_rows

    def count(rows_per: int) -> int:
        return -(-n_rows // rows_per)

    # a size that gives ours's fragments is ours's table again (e.g. 64k and 8k at n=2000)
    sizes = sorted({ours, *(r for r in FRAGMENT_ROWS if count(r) != count(ours))})
    if len(sizes) < len({ours, *FRAGMENT_ROWS}):
        log.info("rows per fragment: %d rows make the same fragments for several sizes", n_rows)
    uris = {n: str(work / f"fragments-{n}.lance") for n in sizes}
    keys = random.Random(3).sample(table.column("image_id").to_pylist(), SAMPLE)

    def writer(rows_per: int) -> Any:
        def write() -> None:
            shutil.rmtree(uris[rows_per], ignore_errors=True)
            lance.write_dataset(table, uris[rows_per], max_rows_per_file=rows_per)

        return write

    writes = interleaved({n: writer(n) for n in sizes}, 2)
    measured: dict[int, dict[str, float]] = {}
    datasets = {}
    for n in sizes:
        lance.dataset(uris[n]).create_scalar_index("image_id", "BTREE")
        datasets[n] = ds = lance.dataset(uris[n])
        spark_s, partitions = _spark_read_seconds(ctx, uris[n])
        measured[n] = {
            "write": writes[n],
            "fragments": len(ds.get_fragments()),
            "spark": spark_s,
            "partitions": partitions,
        }

    def lookups(ds: Any) -> Any:
        def run() -> None:
            for k in keys:
                ds.to_table(columns=["image_data"], filter=f"image_id = '{k}'")

        return run

    takes = interleaved(
        {n: lambda d=d: d.take(positions, columns=["image_data"]) for n, d in datasets.items()}, 7
    )
    finds = interleaved({n: lookups(d) for n, d in datasets.items()}, 5)
    for n in sizes:
        measured[n] |= {"take": takes[n], "lookups": finds[n]}
        shutil.rmtree(uris[n], ignore_errors=True)
    mean_bytes = float(table.column("size_bytes").to_numpy().mean())

    def label(rows_per: int) -> str:
        return f"{rows_per} rows (~{rows_per * mean_bytes / MB:.0f} MB)"

    what = {
        "write": ("write the table", "s", False),
        "fragments": ("fragments", "fragments", True),
        "partitions": ("Spark partitions of a read", "partitions", True),
        "spark": ("Spark read of every image's bytes", "s", False),
        "take": (f"{SAMPLE} random rows", "s", False),
        "lookups": (f"{SAMPLE} lookups by image_id (indexed)", "s", False),
    }
    rows: list[Row] = []
    for rows_per, other in measured.items():
        if rows_per == ours:
            continue
        for key, (name, unit, higher) in what.items():
            rows.append(
                row(
                    f"rows per fragment: {name}, ours {label(ours)} vs {label(rows_per)}",
                    measured[ours][key],
                    other[key],
                    unit,
                    higher=higher,
                )
            )
    return rows


def _lookup_run(
    ds: Any, key: str, keys: list[str], columns: list[str] | None, use_index: bool
) -> Any:
    """A function that looks up ``keys`` one at a time and checks each is found once."""

    def run() -> None:
        for k in keys:
            table = ds.to_table(
                columns=columns, filter=f"{key} = '{k}'", use_scalar_index=use_index
            )
            assert table.num_rows == 1, (key, k, table.num_rows)

    return run


def _lookups(
    ds: Any, key: str, keys: list[str], columns: list[str] | None, use_index: bool
) -> float:
    return warm(_lookup_run(ds, key, keys, columns, use_index))


def _index(lake: Any, table: pa.Table, work: Path) -> list[Row]:
    import lance

    from vlm_lake.tables.layout import MULTIMODAL_LAYOUT, TEXTS_LAYOUT

    rows: list[Row] = []
    rng = random.Random(1)
    for name, uri, layout in (
        ("images", lake.images, IMAGES_LAYOUT),
        ("texts", lake.texts, TEXTS_LAYOUT),
        ("multimodal", lake.multimodal, MULTIMODAL_LAYOUT),
    ):
        key = layout.key
        copy = str(work / f"index-{name}.lance")
        written = lance.write_dataset(
            publish.open_published(uri).to_table(), copy, max_rows_per_file=layout.rows_per_fragment
        )
        keys = rng.sample(written.to_table(columns=[key]).column(key).to_pylist(), SAMPLE)
        columns = ["image_data"] if name == "images" else None  # a sample: the whole row
        _, build_s = timed(lambda w=written, k=key: w.create_scalar_index(k, "BTREE"))
        ds = lance.dataset(copy)
        assert ds.list_indices(), "the index was not created"
        best = interleaved(
            {use: _lookup_run(ds, key, keys, columns, use) for use in (True, False)}, 5
        )
        with_s, without_s = best[True], best[False]
        rows += [
            row(
                f"index: {SAMPLE} lookups by {key} in {name}, with vs without BTREE",
                with_s,
                without_s,
                "s",
                higher=False,
            ),
            row(f"index: build BTREE on {name}.{key} ({ds.count_rows()} rows)", build_s, None, "s"),
        ]
        if name == "images":
            rows += _upsert_rows(ds, table)
        shutil.rmtree(copy, ignore_errors=True)
    return rows


def _upsert_batch(table: pa.Table, ds: Any, seed: int, count: int = 20) -> pa.Table:
    """``count`` rows to upsert: half updates of existing ids, half new ids."""
    rng = random.Random(seed)
    picked = table.take(rng.sample(range(table.num_rows), count))
    ids = picked.column("image_id").to_pylist()
    ids = ids[: count // 2] + [f"new{seed:04d}_{i}" for i in range(count - count // 2)]
    return picked.set_column(0, table.schema.field(0), pa.array(ids, pa.string())).cast(ds.schema)


def _upsert_run(ds: Any, batch: pa.Table, use_index: bool) -> Any:
    """A function that upserts ``batch`` by ``image_id`` without committing."""

    def run() -> None:
        (
            ds.merge_insert("image_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .use_index(use_index)
            .execute_uncommitted(batch)  # uncommitted: every repeat sees the same table
        )

    return run


def _upsert_seconds(ds: Any, batch: pa.Table, use_index: bool) -> float:
    return warm(_upsert_run(ds, batch, use_index), repeats=3)


def _upsert_rows(ds: Any, table: pa.Table) -> list[Row]:
    batch = _upsert_batch(table, ds, seed=0)
    best = interleaved({use: _upsert_run(ds, batch, use) for use in (True, False)}, 5)
    with_s, without_s = best[True], best[False]
    return [
        row(
            f"index: upsert {batch.num_rows} rows into images (merge_insert), with vs without",
            with_s,
            without_s,
            "s",
            higher=False,
        )
    ]


def _reads(ds: Any, positions: list[int], keys: list[str], batch: pa.Table) -> dict[str, float]:
    """Random rows, a metadata scan, id lookups and an upsert on ``ds``, in seconds."""
    meta = ["image_id", "sha256", "size_bytes", "width", "height"]
    return {
        "rows": warm(lambda: ds.take(positions, columns=["image_data"])),
        "scan": warm(lambda: ds.to_table(columns=meta)),
        "lookups": _lookups(ds, "image_id", keys, ["image_data"], True),
        "upsert": _upsert_seconds(ds, batch, True),
    }


def _compaction(table: pa.Table, work: Path, positions: list[int]) -> list[Row]:
    import lance

    from vlm_lake.tables.layout import maintain

    uri = str(work / "compaction.lance")
    base_rows = table.num_rows - INCREMENTS * INCREMENT_ROWS
    if base_rows < SAMPLE:
        log.warning(
            "compaction: %d images are too few for %d increments", table.num_rows, INCREMENTS
        )
        return []
    ours = IMAGES_LAYOUT.rows_per_fragment
    lance.write_dataset(table.slice(0, base_rows), uri, max_rows_per_file=ours)
    maintain(uri, None, IMAGES_LAYOUT)  # the index, as after a full ingest
    # rows of the first write: present in every state measured
    keys = random.Random(2).sample(table.column("image_id").to_pylist()[:base_rows], SAMPLE)
    positions = [p for p in positions if p < base_rows]
    policy = IMAGES_LAYOUT.compaction
    states: dict[str, dict[str, float]] = {}
    merge_times = []
    for k in range(1, INCREMENTS + 1):
        chunk = table.slice(base_rows + (k - 1) * INCREMENT_ROWS, INCREMENT_ROWS)
        _, seconds = timed(
            lambda c=chunk: lance_io.merge_batches(c.to_batches(), uri, table.schema, on="image_id")
        )
        merge_times.append(seconds)
        ds = lance.dataset(uri)
        small = policy.small_fragments(ds, ours)
        if small == policy.max_small_fragments - 1 or k == INCREMENTS:
            name = f"{len(ds.get_fragments())} fragments"
            if small == policy.max_small_fragments - 1:
                name += f" ({small} small: the most the policy leaves)"
            states[name] = _reads(ds, positions, keys, _upsert_batch(table, ds, seed=1))
    ds = lance.dataset(uri)
    _, reindex_s = timed(lambda: ds.optimize.optimize_indices(index_names=["image_id_idx"]))
    ds = lance.dataset(uri)
    states[f"{len(ds.get_fragments())} fragments, index updated"] = _reads(
        ds, positions, keys, _upsert_batch(table, ds, seed=1)
    )
    many = lance.dataset(uri)
    many_frags = len(many.get_fragments())
    assert IMAGES_LAYOUT.compaction.needs_compaction(many, ours)
    report, maintain_s = timed(lambda: maintain(uri, None, IMAGES_LAYOUT))
    ds = lance.dataset(uri)
    assert report.compacted and ds.index_statistics("image_id_idx")["num_unindexed_rows"] == 0
    compacted = _reads(ds, positions, keys, _upsert_batch(table, ds, seed=1))
    few = len(ds.get_fragments())
    assert (
        ds.to_table(columns=["image_id", "sha256"])
        .sort_by("image_id")
        .equals(table.select(["image_id", "sha256"]).sort_by("image_id"))
    ), "compaction changed the rows"
    shutil.rmtree(uri, ignore_errors=True)
    what = {
        "rows": f"{SAMPLE} random rows",
        "scan": "scan of the metadata columns",
        "lookups": f"{SAMPLE} lookups by image_id",
        "upsert": "upsert of 20 rows (merge_insert, 10 updates)",
    }
    rows = [
        row(
            f"compaction: fragments, compacted vs {INCREMENTS} ingests of {INCREMENT_ROWS} rows",
            few,
            many_frags,
            "fragments",
            higher=False,
        )
    ]
    for state, measured in states.items():
        for key, label in what.items():
            rows.append(
                row(
                    f"compaction: {label}, compacted vs {state}",
                    compacted[key],
                    measured[key],
                    "s",
                    higher=False,
                )
            )
    first, last = sorted(merge_times[:5]), sorted(merge_times[-5:])
    rows += [
        row(
            f"compaction: one ingest of {INCREMENT_ROWS} rows, the first 5 vs the last 5 (median)",
            first[2],
            last[2],
            "s",
            higher=False,
        ),
        row(
            f"compaction: maintenance (index update + compaction of {report.fragments_removed} "
            "fragments) vs one ingest (median)",
            reindex_s + maintain_s,
            sorted(merge_times)[len(merge_times) // 2],
            "s",
            higher=False,
        ),
    ]
    return rows


def run(ctx: Context) -> list[Row]:
    """Measure every layout choice on the lake's image table; return the rows."""
    lake = ctx.lake()
    images = publish.open_published(lake.images)
    table = images.to_table().cast(IMAGE_SCHEMA)  # ours: image_data uncompressed
    positions = sample_positions(table.num_rows)
    work = ctx.work / "layout"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for name, section in (
        ("encoding", lambda: _encodings(table, work, positions)),
        ("fragments", lambda: _fragments(ctx, table, work, positions)),
        ("index", lambda: _index(lake, table, work)),
        ("compaction", lambda: _compaction(table, work, positions)),
    ):
        section_rows, seconds = timed(section)
        log.info("layout/%s: %.1f s", name, seconds)
        rows += section_rows
    shutil.rmtree(work, ignore_errors=True)
    return rows
