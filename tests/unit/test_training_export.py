"""Training JSON export: multimodal.lance -> alpaca-style JSON, locally and on S3."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import sample_image_bytes, write_published

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.store.multipart import PART_SIZE
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.export_json import export_training_json, format_record

IMG1 = sample_image_bytes("image1.jpg")
IMG2 = sample_image_bytes("image2.jpg")
IMG3 = sample_image_bytes("image3.jpg")
PNG = sample_image_bytes("image4.png")

DOCS: list[dict[str, Any]] = [
    {"docid": "d1", "text": "two images, slot 2 empty", "ids": ["image1", None, "image3"]},
    {"docid": "d2", "text": "no images at all", "ids": [None, None, None]},
    {
        "docid": "d3",
        "text": 'all three "quoted"\nand ünïcödé 中文',
        "ids": ["image2", "image4", "image1"],
    },
    {"docid": "d4", "text": "only the last slot", "ids": [None, None, "image2"]},
    {"docid": "d5", "text": "", "ids": ["image3", None, None]},
]
BYTES = {"image1": IMG1, "image2": IMG2, "image3": IMG3, "image4": PNG}


def _table(docs: list[dict[str, Any]]) -> pa.Table:
    rows = []
    for d in docs:
        row: dict[str, Any] = {"docid": d["docid"], "text": d["text"]}
        for k, image_id in enumerate(d["ids"], start=1):
            row[f"image_id{k}"] = image_id
            row[f"image{k}"] = None if image_id is None else BYTES[image_id]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=multimodal_schema(3))


def _expected(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "instruction": d["text"],
            "input": [BYTES[i].hex() for i in d["ids"] if i is not None],
            "output": "",
        }
        for d in docs
    ]


@pytest.fixture()
def mm_local(tmp_path: Path) -> str:
    uri = str(tmp_path / "lake" / "multimodal.lance")
    write_published(_table(DOCS), uri, schema=multimodal_schema(3), max_rows_per_file=2)
    return uri


def test_export_local(tmp_path: Path, local_store: ObjectStore, mm_local: str) -> None:
    out = tmp_path / "out" / "training_data.json"
    report = export_training_json(local_store, mm_local, str(out), batch_rows=2)
    raw = out.read_bytes()
    records = json.loads(raw.decode("utf-8"))
    assert records == _expected(DOCS)
    assert isinstance(records, list) and len(records) == 5
    for rec, doc in zip(records, DOCS, strict=True):
        assert list(rec) == ["instruction", "input", "output"]
        present = [BYTES[i] for i in doc["ids"] if i is not None]
        assert [bytes.fromhex(h) for h in rec["input"]] == present
        assert rec["output"] == ""
    assert records[1]["input"] == []
    assert report.records == 5
    assert report.images == 7
    assert report.bytes_written == len(raw)
    assert report.source_version == 1
    assert report.uri == str(out)
    # One record per line between the brackets.
    lines = raw.decode("utf-8").split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    assert len(lines) == 5 + 3
    assert sorted(os.listdir(out.parent)) == ["training_data.json"]


def test_export_chosen_version(tmp_path: Path, local_store: ObjectStore, mm_local: str) -> None:
    write_published(_table(DOCS[:1]), mm_local, schema=multimodal_schema(3), mode="overwrite")
    out = str(tmp_path / "t.json")
    latest = export_training_json(local_store, mm_local, out)
    assert latest.source_version == 2
    assert json.loads(Path(out).read_text()) == _expected(DOCS[:1])
    old = export_training_json(local_store, mm_local, out, version=1)
    assert old.source_version == 1
    assert json.loads(Path(out).read_text()) == _expected(DOCS)


def test_export_empty_dataset(tmp_path: Path, local_store: ObjectStore) -> None:
    uri = str(tmp_path / "mm.lance")
    write_published(_table([]), uri, schema=multimodal_schema(3))
    out = tmp_path / "t.json"
    report = export_training_json(local_store, uri, str(out))
    assert json.loads(out.read_text()) == []
    assert (report.records, report.images, report.bytes_written) == (0, 0, out.stat().st_size)


def test_export_missing_dataset(tmp_path: Path, local_store: ObjectStore) -> None:
    out = tmp_path / "t.json"
    with pytest.raises(DatasetNotFoundError, match="no Lance dataset"):
        export_training_json(local_store, str(tmp_path / "nope.lance"), str(out))
    assert not out.exists()


def test_second_export_replaces_file(
    tmp_path: Path, local_store: ObjectStore, mm_local: str
) -> None:
    out = tmp_path / "training_data.json"
    out.write_text('["stale content that is much longer than nothing"]' * 1000)
    export_training_json(local_store, mm_local, str(out))
    first = out.read_bytes()
    assert json.loads(first) == _expected(DOCS)
    write_published(_table(DOCS[2:4]), mm_local, schema=multimodal_schema(3), mode="overwrite")
    export_training_json(local_store, mm_local, str(out))
    assert json.loads(out.read_bytes()) == _expected(DOCS[2:4])
    assert sorted(os.listdir(tmp_path)) == ["lake", "training_data.json"]


def test_failed_export_keeps_previous_file(tmp_path: Path, local_store: ObjectStore) -> None:
    # A malformed table: image2 holds strings, so the second record cannot be hex-encoded.
    schema = pa.schema(
        [
            pa.field("docid", pa.string()),
            pa.field("text", pa.string()),
            pa.field("image_id1", pa.string()),
            pa.field("image1", pa.binary()),
        ]
    )
    bad = (
        pa.table(
            {
                "docid": ["a", "b"],
                "text": ["fine", "broken"],
                "image_id1": ["x", "y"],
                "image1": pa.array([IMG1, None], pa.binary()),
            },
            schema=schema,
        )
        .append_column("image_id2", pa.array([None, "z"]))
        .append_column("image2", pa.array([None, "not bytes"], pa.string()))
    )
    uri = str(tmp_path / "bad.lance")
    write_published(bad, uri)
    out = tmp_path / "out" / "training_data.json"
    out.parent.mkdir()
    out.write_bytes(b'[{"previous": true}]')
    with pytest.raises((AttributeError, TypeError, ValueError)):
        export_training_json(local_store, uri, str(out), batch_rows=1)
    assert out.read_bytes() == b'[{"previous": true}]'
    assert os.listdir(out.parent) == ["training_data.json"]


def test_export_to_s3(s3_store: ObjectStore, bucket: str) -> None:
    mm = f"s3://{bucket}/lake/multimodal.lance"
    write_published(
        _table(DOCS), mm, schema=multimodal_schema(3), storage_options=s3_store.storage_options(mm)
    )
    out = f"oss://{bucket}/lake/training_data.json"
    report = export_training_json(s3_store, mm, out, batch_rows=3)
    raw = s3_store.read_bytes(out)
    assert json.loads(raw) == _expected(DOCS)
    assert report.bytes_written == len(raw)
    assert report.images == 7

    # Second export over the existing object replaces it.
    write_published(
        _table(DOCS[:2]),
        mm,
        schema=multimodal_schema(3),
        mode="overwrite",
        storage_options=s3_store.storage_options(mm),
    )
    export_training_json(s3_store, mm, out)
    assert json.loads(s3_store.read_bytes(out)) == _expected(DOCS[:2])
    keys = [i.key for i in s3_store.list(f"s3://{bucket}/lake/training_data.json")]
    assert keys == ["lake/training_data.json"]


def test_large_export_to_s3_uses_multipart(
    tmp_path: Path, s3_store: ObjectStore, bucket: str
) -> None:
    big = [
        {"docid": f"d{i:03d}", "text": f"doc {i}", "ids": ["image1", "image2", None]}
        for i in range(70)
    ]
    uri = str(tmp_path / "mm.lance")
    write_published(_table(big), uri, schema=multimodal_schema(3))
    out = f"s3://{bucket}/training_data.json"
    report = export_training_json(s3_store, uri, out, batch_rows=16)
    assert report.bytes_written > PART_SIZE
    raw = s3_store.read_bytes(out)
    assert len(raw) == report.bytes_written
    records = json.loads(raw)
    assert [r["instruction"] for r in records] == [f"doc {i}" for i in range(70)]
    assert all(bytes.fromhex(r["input"][1]) == IMG2 for r in records)
    head = s3_store.client.head_object(Bucket=bucket, Key="training_data.json")
    assert "-" in head["ETag"]  # a multipart ETag


@pytest.mark.parametrize(
    "text",
    [
        'He said "hi"',
        "line one\nline two\r\n\ttabbed",
        "back\\slash and / slash",
        "中文 ünïcödé 🐱",
        "control \x00\x1f chars",
        "separators \u2028 \u2029",
        "",
    ],
)
def test_format_record_is_valid_json(text: str) -> None:
    imgs = [b"\x00\xff", None, b"\x10"]
    line = format_record(text, imgs)
    assert "\n" not in line  # one record per line
    assert json.loads(line) == {"instruction": text, "input": ["00ff", "10"], "output": ""}


def test_format_record_keeps_non_ascii_readable() -> None:
    line = format_record("中文", [])
    assert "中文" in line
    assert json.loads(line) == {"instruction": "中文", "input": [], "output": ""}
    assert json.loads(format_record("x", [None, None])) == {
        "instruction": "x",
        "input": [],
        "output": "",
    }
