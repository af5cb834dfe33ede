"""The sharded training export: byte-equal to the single stream, incremental, checked."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
from helpers import recorded_s3_requests, sample_image_bytes, write_published
from PIL import Image

from vlm_lake.checks.training_shards import check_training_export
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.assemble import MIN_PART, plan_parts
from vlm_lake.training.export_json import export_training_json
from vlm_lake.training.manifest import manifest_uri, read_manifest, shards_root
from vlm_lake.training.sharded_export import export_sharded, publish_export
from vlm_lake.training.shards import shard_uri

SMALL = [sample_image_bytes(n) for n in ("image1.jpg", "image2.jpg", "image3.jpg", "image4.png")]


def _noise_jpeg(seed: int, side: int = 1100) -> bytes:
    """A real JPEG of about 1 MB (noise compresses badly): 2 MB of hex per image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _docs(n: int, images: list[bytes], start: int = 0) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for i in range(start, start + n):
        row: dict[str, Any] = {"docid": f"d{i:04d}", "text": f'document {i} «ü» "q"\n'}
        for k in range(1, 4):
            data = images[(i + k) % len(images)] if (i + k) % 3 else None
            row[f"image_id{k}"] = None if data is None else f"img{(i + k) % len(images)}"
            row[f"image{k}"] = data
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=multimodal_schema(3))


def _single_stream(store: ObjectStore, mm: str, out: str) -> bytes:
    export_training_json(store, mm, out, version=None)
    return store.read_bytes(out)


@pytest.mark.parametrize("seed", range(20))
def test_parts_cover_every_byte_once_and_respect_the_part_limits(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 3, 9, 10, 14, 25, 60, 250]) for _ in range(rng.randint(0, 12))]
    parts = plan_parts(sizes, min_part=10, max_part=40)
    got = [(p.shard, j) for part in parts for p in part.pieces for j in range(p.start, p.stop)]
    assert got == [(i, j) for i, size in enumerate(sizes) for j in range(size)]  # in order, once
    assert all(p.size > 0 for part in parts for p in part.pieces)
    assert parts[-1].tail and not any(p.tail for p in parts[:-1])
    for part in parts[:-1]:
        assert 10 <= part.size <= 40 + 10
        if part.copy:
            assert len(part.pieces) == 1 and part.pieces[0].size <= 40


def test_local_shards_assemble_to_the_single_stream_byte_for_byte(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "lake" / "multimodal.lance")
    write_published(_docs(11, SMALL), mm, schema=multimodal_schema(3), max_rows_per_file=4)
    out = str(tmp_path / "lake" / "training_data.json")
    run = export_sharded(local_store, mm, out, version=None, target_bytes=600_000)
    expected = _single_stream(local_store, mm, str(tmp_path / "single.json"))
    assert Path(run.candidate).read_bytes() == expected
    manifest = run.manifest
    assert manifest.records == 11 and manifest.bytes == len(expected)
    assert len(manifest.shards) > 3  # fragments of 4 rows, split further by size
    assert [s.head for s in manifest.shards] == [True] + [False] * (len(manifest.shards) - 1)
    for shard in manifest.shards:
        data = Path(shard_uri(shards_root(out), shard.name)).read_bytes()
        assert len(data) == shard.bytes and hashlib.sha256(data).hexdigest() == shard.sha256
    outcomes = {o.name: o for o in check_training_export(local_store, run.candidate, manifest, 11)}
    assert all(o.passed for o in outcomes.values()), outcomes
    assert outcomes["images_decode"].details["images"] == manifest.images


def test_an_empty_table_gives_the_empty_array(tmp_path: Path, local_store: ObjectStore) -> None:
    mm = str(tmp_path / "multimodal.lance")
    write_published(_docs(0, SMALL), mm, schema=multimodal_schema(3))
    run = export_sharded(local_store, mm, str(tmp_path / "training_data.json"), version=None)
    assert (
        Path(run.candidate).read_bytes()
        == b"[\n]\n"
        == _single_stream(local_store, mm, str(tmp_path / "single.json"))
    )
    assert all(o.passed for o in check_training_export(local_store, run.candidate, run.manifest, 0))


def test_an_incremental_export_rewrites_only_changed_shards_and_publishes(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "lake" / "multimodal.lance")
    out = str(tmp_path / "lake" / "training_data.json")
    write_published(_docs(20, SMALL), mm, schema=multimodal_schema(3), max_rows_per_file=5)
    first = export_sharded(local_store, mm, out, version=None)
    assert (first.written, first.reused) == (4, 0)
    publish_export(local_store, out, first.manifest)
    assert read_manifest(local_store, manifest_uri(out)) == first.manifest
    # a change in the third fragment (a deletion) and four new documents (a new fragment)
    lance.dataset(mm).delete("docid = 'd0012'")
    lance.write_dataset(_docs(4, SMALL[::-1], start=20), mm, mode="append")
    again = export_sharded(local_store, mm, out, version=None)
    assert (again.written, again.reused) == (2, 3)
    assert Path(again.candidate).read_bytes() == _single_stream(
        local_store, mm, str(tmp_path / "single.json")
    )
    assert again.manifest.records == 23
    checked = check_training_export(
        local_store, again.candidate, again.manifest, 23, read=again.written_names
    )
    assert all(o.passed for o in checked), checked
    assert "2 shards read in parallel, 3 reused ones confirmed by size" in checked[0].expected
    reused = next(s for s in again.manifest.shards if s.name not in again.written_names)
    reused_path = Path(shard_uri(shards_root(out), reused.name))
    kept = reused_path.read_bytes()
    reused_path.write_bytes(kept[:-5])
    checked = check_training_export(
        local_store, again.candidate, again.manifest, 23, read=again.written_names
    )
    assert [o.name for o in checked if not o.passed] == ["shards_match_manifest"]
    reused_path.write_bytes(kept)
    deleted = publish_export(local_store, out, again.manifest)
    assert deleted == 1  # the third fragment's old shard
    assert Path(out).read_bytes() == Path(tmp_path / "single.json").read_bytes()
    on_disk = sorted(p.name for p in Path(shards_root(out)).iterdir())
    assert on_disk == sorted(f"{s.name}.jsonpart" for s in again.manifest.shards)
    # nothing changed: nothing is written
    assert export_sharded(local_store, mm, out, version=None).written == 0


def test_a_tampered_shard_or_record_fails_the_checks(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "multimodal.lance")
    out = str(tmp_path / "training_data.json")
    write_published(_docs(6, SMALL), mm, schema=multimodal_schema(3), max_rows_per_file=3)
    run = export_sharded(local_store, mm, out, version=None)
    second = Path(shard_uri(shards_root(out), run.manifest.shards[1].name))
    data = second.read_bytes()
    second.write_bytes(data.replace(b'"output": ""', b'"output": "x"', 1))  # same size
    got = {o.name: o for o in check_training_export(local_store, run.candidate, run.manifest, 6)}
    assert not got["shards_match_manifest"].passed and got["shards_match_manifest"].observed == 1
    assert got["parses"].passed and got["images_decode"].passed
    second.write_bytes(data[:-1])  # a record cut short
    got = {o.name: o for o in check_training_export(local_store, run.candidate, run.manifest, 6)}
    assert not got["parses"].passed and second.name in str(got["parses"].observed)


def test_s3_assembly_copies_large_shards_server_side(
    s3_store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    big = [_noise_jpeg(s) for s in range(3)]
    mm = f"s3://{bucket}/lake/multimodal.lance"
    storage = s3_store.storage_options(mm)
    # fragments: 6 documents of large photos, 1 and 1 of small ones, 8 of large photos
    pieces = [_docs(6, big), _docs(1, SMALL, 6), _docs(1, SMALL, 7), _docs(8, big, 8)]
    for i, piece in enumerate(pieces):
        mode = "create" if i == 0 else "append"
        lance.write_dataset(piece, mm, mode=mode, storage_options=storage)
    out = f"s3://{bucket}/lake/training_data.json"
    with recorded_s3_requests() as requests:
        run = export_sharded(s3_store, mm, out, version=None)
    expected = _single_stream(s3_store, mm, f"s3://{bucket}/single.json")
    assert s3_store.read_bytes(run.candidate) == expected
    shards = run.manifest.shards
    assert len(shards) == 4 and shards[0].bytes > 2 * MIN_PART and shards[1].bytes < MIN_PART
    # the two small shards and the first bytes of the last one make one uploaded part; the
    # rest (more than 90% of the file) is copied server side, never downloaded
    assert run.assembly.uploaded_bytes == MIN_PART + 3
    assert run.assembly.copied_bytes == len(expected) - MIN_PART - 3
    assert run.assembly.parts == 4
    gets = [r.path for r in requests if r.method == "GET" and ".shards/" in r.path]
    assert not [p for p in gets if shards[0].name in p]
    assert len([p for p in gets if shards[3].name in p]) == 1  # one ranged read
    parts = [
        r
        for r in requests
        if r.method == "PUT" and r.path.endswith("/training_data.json.candidate")
    ]
    assert sorted(r.query["partNumber"][0] for r in parts) == ["1", "2", "3", "4"]
    outcomes = check_training_export(s3_store, run.candidate, run.manifest, 16)
    assert all(o.passed for o in outcomes), outcomes
    publish_export(s3_store, out, run.manifest)
    assert s3_store.read_bytes(out) == expected
    assert json.loads(s3_store.read_bytes(manifest_uri(out)))["records"] == 16


def test_spark_tasks_write_and_check_the_shards(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "multimodal.lance")
    out = str(tmp_path / "training_data.json")
    write_published(_docs(30, SMALL), mm, schema=multimodal_schema(3), max_rows_per_file=3)
    run = export_sharded(local_store, mm, out, version=None, spark=lambda: spark, engine="auto")
    assert run.engine == "spark" and run.written == 10
    assert Path(run.candidate).read_bytes() == _single_stream(
        local_store, mm, str(tmp_path / "single.json")
    )
    outcomes = check_training_export(
        local_store, run.candidate, run.manifest, 30, spark=lambda: spark
    )
    assert all(o.passed for o in outcomes), outcomes
    with pytest.raises(ValueError, match="engine='spark' needs a Spark session"):
        export_sharded(local_store, mm, out, version=None, engine="spark")
    with pytest.raises(ValueError, match="engine='gpu' is not allowed"):
        export_sharded(local_store, mm, out, version=None, engine="gpu")
