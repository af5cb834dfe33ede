"""Text ingest: JSON / JSON Lines documents (local or S3) -> texts.lance."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lance
import pytest
from helpers import SEED_TESTDATA, checked_text_row, put, upload_seed_example, write_json

from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError, SourceNotFoundError
from vlm_lake.ingest.texts import TextIngestOptions, ingest_texts
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import PROVENANCE_COLUMNS, image_id_columns, text_schema

#: Versions a full rewrite commits: the rows, then the docid index a rewrite drops
#: (``lance_layout.maintain``). Both are complete tables; the report names the latest.
REWRITE_VERSIONS = 2

SEED_ROWS = [
    {
        "docid": "doc_001",
        "text": "This is a prompt for image processing.",
        "image_id1": "image1",
        "image_id2": "image2",
        "image_id3": None,
    },
    {
        "docid": "doc_002",
        "text": "Another prompt with image references.",
        "image_id1": "image3",
        "image_id2": "image1",
        "image_id3": None,
    },
    {
        "docid": "doc_003",
        "text": "Interesting dialogue about images.",
        "image_id1": "image2",
        "image_id2": "image1",
        "image_id3": "image3",
    },
]


STRICT = TextIngestOptions(on_bad_input="fail")


def _rows(uri: str, store: ObjectStore | None = None) -> list[dict[str, Any]]:
    """The rows without the provenance columns (source_uri, record_sha256)."""
    opts = store.storage_options(uri) if store is not None else None
    rows = lance.dataset(uri, storage_options=opts or None).to_table().to_pylist()
    return [
        {k: v for k, v in checked_text_row(r).items() if k not in PROVENANCE_COLUMNS} for r in rows
    ]


def _jsonl(path: Path, records: list[Any], *, ensure_ascii: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=ensure_ascii) for r in records) + "\n",
        encoding="utf-8",
    )
    return path


def test_seed_json_array(tmp_path: Path, local_store: ObjectStore) -> None:
    out = str(tmp_path / "texts.lance")
    report = ingest_texts(local_store, str(SEED_TESTDATA), out)
    assert (report.files, report.documents, report.num_slots) == (1, 3, 3)
    assert report.summary.num_rows == 3
    assert report.summary.version == REWRITE_VERSIONS
    ds = lance.dataset(out)
    assert ds.schema == text_schema(3)
    assert image_id_columns(ds.schema) == ["image_id1", "image_id2", "image_id3"]
    assert _rows(out) == SEED_ROWS


def test_text_schema_and_image_id_columns() -> None:
    schema = text_schema(12)
    assert schema.names[:2] == ["docid", "text"]
    assert not schema.field("docid").nullable and not schema.field("text").nullable
    assert schema.field("image_id12").nullable
    shuffled = schema.remove(schema.get_field_index("image_id2")).append(schema.field("image_id2"))
    assert image_id_columns(shuffled) == [f"image_id{k}" for k in range(1, 13)]


def test_json_lines_file(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text(
        json.dumps({"docid": "a", "text": "first", "image_id2": "img9"})
        + "\n\n   \n"
        + json.dumps({"docid": "b", "text": "second", "image_id1": None})
        + "\n"
        + json.dumps({"docid": "c", "text": "third", "image_id1": "x", "extra": [1, 2]})
    )
    report = ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert (report.documents, report.num_slots) == (3, 2)
    assert _rows(str(tmp_path / "t.lance")) == [
        {"docid": "a", "text": "first", "image_id1": None, "image_id2": "img9"},
        {"docid": "b", "text": "second", "image_id1": None, "image_id2": None},
        {"docid": "c", "text": "third", "image_id1": "x", "image_id2": None},
    ]


def test_documents_without_images_get_one_slot(tmp_path: Path, local_store: ObjectStore) -> None:
    src = _jsonl(tmp_path / "d.ndjson", [{"docid": "a", "text": "t"}])
    report = ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert report.num_slots == 1
    assert _rows(str(tmp_path / "t.lance")) == [{"docid": "a", "text": "t", "image_id1": None}]


def test_json_file_with_several_values_is_read_as_lines(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    src = _jsonl(tmp_path / "d.json", [{"docid": "a", "text": "1"}, {"docid": "b", "text": "2"}])
    report = ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert report.documents == 2
    assert [r["docid"] for r in _rows(str(tmp_path / "t.lance"))] == ["a", "b"]


def test_json_file_with_single_object(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "one.json"
    src.write_text(json.dumps({"docid": "solo", "text": "alone", "image_id1": "i"}, indent=2))
    ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert _rows(str(tmp_path / "t.lance")) == [
        {"docid": "solo", "text": "alone", "image_id1": "i"}
    ]


def test_prefix_with_several_files(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "texts"
    write_json(src / "a.json", [{"docid": "a1", "text": "A1", "image_id2": "i2"}])
    _jsonl(src / "b" / "b.jsonl", [{"docid": "b1", "text": "B1", "image_id4": "i4"}])
    _jsonl(
        src / "b" / "c.ndjson",
        [{"docid": "c1", "text": "C1"}, {"docid": "c2", "text": "C2", "image_id1": "i1"}],
    )
    (src / "readme.txt").write_text("not a text source")
    report = ingest_texts(
        local_store, str(src), str(tmp_path / "t.lance"), TextIngestOptions(batch_rows=1)
    )
    assert (report.files, report.documents, report.num_slots) == (3, 4, 4)
    ds = lance.dataset(str(tmp_path / "t.lance"))
    assert ds.schema == text_schema(4)
    rows = {r["docid"]: checked_text_row(r) for r in ds.to_table().to_pylist()}
    assert set(rows) == {"a1", "b1", "c1", "c2"}
    assert rows["a1"] == {
        "docid": "a1",
        "text": "A1",
        "image_id1": None,
        "image_id2": "i2",
        "image_id3": None,
        "image_id4": None,
        "source_uri": str(src / "a.json"),
        "record_sha256": rows["a1"]["record_sha256"],
    }
    assert len(rows["a1"]["record_sha256"]) == 64
    assert rows["b1"]["image_id4"] == "i4"
    assert rows["c2"]["image_id1"] == "i1"
    assert all(v is None for k, v in rows["c1"].items() if k.startswith("image_id"))


NON_ASCII = [
    {"docid": "文档-1", "text": "中文提示：描述这张图片。", "image_id1": "图片1"},
    {"docid": "doc-é", "text": "Ça va? Ünïcödé — “quotes” 'single' \"double\"", "image_id1": None},
    {"docid": "emoji", "text": "cat 🐱 and tabs\tand\nnewlines\\backslash", "image_id2": "ñ"},
]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_non_ascii_round_trip(tmp_path: Path, local_store: ObjectStore, ensure_ascii: bool) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps(NON_ASCII, ensure_ascii=ensure_ascii), encoding="utf-8"
    )
    _jsonl(tmp_path / "lines" / "b.jsonl", NON_ASCII, ensure_ascii=ensure_ascii)
    for src in ("a.json", "lines/b.jsonl"):
        out = str(tmp_path / f"{Path(src).stem}.lance")
        ingest_texts(local_store, str(tmp_path / src), out)
        rows = _rows(out)
        assert [(r["docid"], r["text"]) for r in rows] == [
            (d["docid"], d["text"]) for d in NON_ASCII
        ]
        assert [r["image_id1"] for r in rows] == ["图片1", None, None]
        assert rows[2]["image_id2"] == "ñ"


def test_utf8_bom_is_accepted(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "bom.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"docid": "d", "text": "t"}]).encode())
    ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert _rows(str(tmp_path / "t.lance"))[0]["docid"] == "d"


def test_json_lines_with_unicode_line_separator_in_text(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    records = [{"docid": "a", "text": "para one\u2028para two\u0085end"}]
    src = _jsonl(tmp_path / "d.jsonl", records, ensure_ascii=False)
    ingest_texts(local_store, str(src), str(tmp_path / "t.lance"))
    assert _rows(str(tmp_path / "t.lance"))[0]["text"] == records[0]["text"]


# -- errors ------------------------------------------------------------------------------


def test_invalid_json_array_names_file_and_line(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "broken.json"
    src.write_text('[\n  {"docid": "a", "text": "ok"},\n  {"docid": "b", "text": }\n]\n')
    with pytest.raises(InvalidDocumentError, match="invalid JSON") as info:
        ingest_texts(local_store, str(src), str(tmp_path / "t.lance"), STRICT)
    assert f"{str(src)!r} line 3" in str(info.value)
    assert info.value.line == 3
    assert info.value.source_uri == str(src)


def test_invalid_json_lines_names_file_and_line(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "broken.jsonl"
    src.write_text('{"docid": "a", "text": "ok"}\n\n{"docid": "b", "text": "unterminated}\n')
    with pytest.raises(InvalidDocumentError, match="invalid JSON Lines record") as info:
        ingest_texts(local_store, str(src), str(tmp_path / "t.lance"), STRICT)
    assert f"{str(src)!r} line 3" in str(info.value)
    assert info.value.line == 3


def test_not_utf8_names_file(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "latin1.json"
    src.write_bytes(
        json.dumps([{"docid": "d", "text": "café"}]).replace("\\u00e9", "é").encode("latin-1")
    )
    with pytest.raises(InvalidDocumentError, match="not UTF-8") as info:
        ingest_texts(local_store, str(src), str(tmp_path / "t.lance"), STRICT)
    assert str(src) in str(info.value)


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        ({"text": "no id", "image_id1": "i"}, r"has no 'docid'"),
        ({"docid": "d1"}, r"has no 'text'"),
        ({"docid": "d1", "text": None}, r"has no 'text'"),
        ({"docid": 17, "text": "t"}, r"docid=17 of type int; expected a string"),
        ({"docid": "d1", "text": ["a"]}, r"text=\['a'\] of type list"),
        ({"docid": "d1", "text": "t", "image_id2": 5}, r"image_id2=5 of type int"),
        ({"docid": "d1", "text": "t", "image_id1": {"id": "x"}}, r"image_id1=.* of type dict"),
        ({"docid": "d1", "text": "t", "image_id0": "x"}, r"image slots start at image_id1"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_invalid_records_name_the_file(
    tmp_path: Path, local_store: ObjectStore, record: dict[str, Any], pattern: str, suffix: str
) -> None:
    good = {"docid": "ok", "text": "fine"}
    src = tmp_path / f"docs{suffix}"
    if suffix == ".json":
        write_json(src, [good, record])
    else:
        _jsonl(src, [good, record])
    with pytest.raises(InvalidDocumentError, match=pattern) as info:
        ingest_texts(local_store, str(tmp_path), str(tmp_path / "t.lance"), STRICT)
    assert repr(str(src)) in str(info.value)
    assert "record #1" in str(info.value)
    if suffix == ".jsonl":
        assert info.value.line == 2
    assert not (tmp_path / "t.lance").exists()


def test_record_that_is_not_an_object(tmp_path: Path, local_store: ObjectStore) -> None:
    src = write_json(tmp_path / "d.json", [{"docid": "a", "text": "t"}, "just a string"])
    with pytest.raises(InvalidDocumentError, match="record #1 is a str, expected a JSON object"):
        ingest_texts(local_store, str(src), str(tmp_path / "t.lance"), STRICT)


def test_duplicate_docid_across_files(tmp_path: Path, local_store: ObjectStore) -> None:
    write_json(tmp_path / "src" / "a.json", [{"docid": "same", "text": "one"}])
    _jsonl(
        tmp_path / "src" / "b.jsonl",
        [{"docid": "other", "text": "x"}, {"docid": "same", "text": "two"}],
    )
    with pytest.raises(DuplicateKeyError, match="docid 'same' appears twice") as info:
        ingest_texts(local_store, str(tmp_path / "src"), str(tmp_path / "t.lance"), STRICT)
    assert str(tmp_path / "src" / "a.json") in str(info.value)
    assert str(tmp_path / "src" / "b.jsonl") in str(info.value)


def test_duplicate_docid_within_one_file(tmp_path: Path, local_store: ObjectStore) -> None:
    src = write_json(
        tmp_path / "a.json", [{"docid": "d", "text": "1"}, {"docid": "d", "text": "2"}]
    )
    with pytest.raises(DuplicateKeyError, match="'d'"):
        ingest_texts(local_store, str(src), str(tmp_path / "t.lance"), STRICT)


def test_no_text_files(tmp_path: Path, local_store: ObjectStore) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("{}")
    out = str(tmp_path / "t.lance")
    with pytest.raises(InvalidDocumentError, match="does not end in a text extension") as err:
        ingest_texts(local_store, str(tmp_path / "src"), out, STRICT)
    assert err.value.stage == "listing" and err.value.source_uri.endswith("notes.txt")
    with pytest.raises(SourceNotFoundError, match=r"no valid document.*notes\.txt"):
        ingest_texts(local_store, str(tmp_path / "src"), out)  # quarantined, then nothing left
    with pytest.raises(SourceNotFoundError, match="no objects at texts_uri="):
        ingest_texts(local_store, str(tmp_path / "missing"), out, STRICT)


@pytest.mark.parametrize(
    "bad_content",
    [
        '[{"docid": "doc_001", "text": "dup"}]',  # duplicate with the seed file
        '[{"docid": "new", "text": 3}]',
        "[{",
    ],
)
def test_failed_ingest_keeps_previous_version(
    tmp_path: Path, local_store: ObjectStore, bad_content: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_seed.json").write_bytes(SEED_TESTDATA.read_bytes())
    out = str(tmp_path / "texts.lance")
    assert ingest_texts(local_store, str(src), out).summary.version == REWRITE_VERSIONS
    (src / "b_bad.json").write_text(bad_content)
    with pytest.raises((InvalidDocumentError, DuplicateKeyError)):
        ingest_texts(local_store, str(src), out, STRICT)
    ds = lance.dataset(out)
    assert ds.version == ds.latest_version == REWRITE_VERSIONS
    assert _rows(out) == SEED_ROWS


def test_more_slots_rewrite_the_table_and_keep_earlier_documents(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    out = str(tmp_path / "texts.lance")
    first = ingest_texts(local_store, str(SEED_TESTDATA), out)
    publish.publish(out, first.summary.version)
    src = _jsonl(tmp_path / "new.jsonl", [{"docid": "n", "text": "new", "image_id5": "i"}])
    report = ingest_texts(local_store, str(src), out)
    assert (report.summary.version, report.num_slots, report.full_rebuild) == (
        first.summary.version + REWRITE_VERSIONS,
        5,
        True,
    )
    assert report.missing_from_source == 3
    widened = [{**r, "image_id4": None, "image_id5": None} for r in SEED_ROWS]
    new = {"docid": "n", "text": "new", **{f"image_id{k}": None for k in range(1, 5)}}
    assert _rows(out) == [{**new, "image_id5": "i"}, *widened]
    assert lance.dataset(out, version=first.summary.version).count_rows() == 3


# -- S3 ----------------------------------------------------------------------------------


def test_seed_from_s3_to_s3(s3_store: ObjectStore, bucket: str) -> None:
    upload_seed_example(s3_store.client, bucket)
    out = f"s3://{bucket}/lake/texts.lance"
    report = ingest_texts(s3_store, f"oss://{bucket}/Lance/data/testdata.json", out)
    assert (report.files, report.documents, report.num_slots) == (1, 3, 3)
    assert _rows(out, s3_store) == SEED_ROWS


def test_s3_prefix_several_files_and_errors(s3_store: ObjectStore, bucket: str) -> None:
    put(s3_store.client, bucket, "t/a.json", json.dumps(NON_ASCII, ensure_ascii=False).encode())
    put(
        s3_store.client,
        bucket,
        "t/sub/b.jsonl",
        b'{"docid": "b1", "text": "B", "image_id3": "z"}\n',
    )
    out = f"s3://{bucket}/lake/texts.lance"
    report = ingest_texts(s3_store, f"s3://{bucket}/t/", out)
    assert (report.files, report.documents, report.num_slots) == (2, 4, 3)
    rows = _rows(out, s3_store)
    assert [r["docid"] for r in rows] == ["文档-1", "doc-é", "emoji", "b1"]
    assert rows[1]["text"] == NON_ASCII[1]["text"]
    assert rows[3]["image_id3"] == "z"

    put(s3_store.client, bucket, "t/sub/c.jsonl", b'{"docid": "c", "text": "C"}\n{"docid": 1}\n')
    with pytest.raises(InvalidDocumentError) as info:
        ingest_texts(s3_store, f"s3://{bucket}/t", out, STRICT)
    assert re.search(rf"'s3://{bucket}/t/sub/c.jsonl' line 2", str(info.value))
    ds = lance.dataset(out, storage_options=s3_store.storage_options(out))
    assert ds.latest_version == REWRITE_VERSIONS
    assert ds.count_rows() == 4
