"""The training JSON check streams the file: any chunking gives the same answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import photo_variant

from vlm_lake import checks
from vlm_lake.checks import training_json
from vlm_lake.checks.json_stream import JSONArrayError as _JSONArrayError
from vlm_lake.checks.json_stream import stream_json_array as _stream_json_array
from vlm_lake.training.export_json import format_record

RECORDS = [
    {"instruction": "première ligne — ünïcode", "input": ["ab" * 50], "output": ""},
    {"instruction": "numbers", "input": [], "output": "", "n": 12345678901234567890},
    {"instruction": "nested [brackets], {braces}", "input": ["cd", "ef"], "output": ""},
]


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10**6])
def test_every_chunk_size_gives_the_same_records(size: int) -> None:
    data = (
        "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n]\n"
    ).encode()
    assert list(_stream_json_array(_chunks(data, size))) == RECORDS


@pytest.mark.parametrize("size", [1, 5, 10**6])
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('[\n{"a": 1},\n{"b": 2}\n', "line 4 column 1"),  # unclosed
        ('[\n{"a": 1},\n{"b": 2},\n]\n', "line 4 column 1"),  # trailing comma
        ('\n\n{"a": 1}\n', "line 3 column 1"),  # not an array
        ('[\n{"a": 1}\n]\n]\n', "line 4 column 1"),  # extra data
        ('[\n{"a": 1},\n{"b": tru}\n]\n', "line 3 column 7"),  # bad literal
    ],
)
def test_errors_name_the_line_and_column_in_the_whole_file(
    size: int, body: str, where: str
) -> None:
    with pytest.raises(_JSONArrayError, match=where):
        list(_stream_json_array(_chunks(body.encode(), size)))


def test_a_record_larger_than_the_limit_is_refused_not_buffered() -> None:
    data = b'[{"a": "' + b"x" * 5000 + b'"}]'
    assert list(_stream_json_array(_chunks(data, 100), max_record_bytes=10_000))[0]["a"]
    with pytest.raises(_JSONArrayError, match="line 1"):
        list(_stream_json_array(_chunks(data, 100), max_record_bytes=1000))


def test_check_streams_a_file_larger_than_one_chunk_on_s3(
    s3_store, bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training_json, "READ_CHUNK_BYTES", 1000)  # many chunks, records split
    image = photo_variant(3, size=(64, 48))
    records = [format_record(f"doc {i}", [image, None, image]) for i in range(20)]
    body = ("[\n" + ",\n".join(records) + "\n]\n").encode()
    assert len(body) > 20 * 1000
    s3_store.client.put_object(Bucket=bucket, Key="train.json", Body=body)
    got = {o.name: o for o in checks.check_training_json(s3_store, f"s3://{bucket}/train.json", 20)}
    assert got["parses"].passed and got["record_count_matches"].passed
    assert got["images_decode"].passed and got["images_decode"].details["images"] == 40


def test_check_reports_a_missing_file(tmp_path: Path, local_store) -> None:
    with pytest.raises(FileNotFoundError):
        checks.check_training_json(local_store, str(tmp_path / "absent.json"), 1)
