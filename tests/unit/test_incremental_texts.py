"""Incremental text ingest: record hashes against the published version, quarantine, K growth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lance
import pytest
from helpers import write_json

from vlm_lake.errors import (
    DatasetNotFoundError,
    DuplicateKeyError,
    InvalidDocumentError,
    SourceNotFoundError,
)
from vlm_lake.ingest.texts import TextIngestOptions, TextIngestReport, ingest_texts
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import text_schema
from vlm_lake.tables.lance_io import open_dataset

DOCS = [
    {"docid": "d1", "text": "first", "image_id1": "img1", "image_id2": "img2"},
    {"docid": "d2", "text": "second", "image_id1": "img3"},
    {"docid": "d3", "text": "third", "image_id1": "img1", "image_id3": "img4"},
]


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n",
        encoding="utf-8",
    )
    return path


class Texts:
    """A folder of text files and the lake it is ingested into."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.raw = root / "raw" / "texts"
        self.raw.mkdir(parents=True)
        self.uri = str(root / "lake" / "texts.lance")
        self.rejects_uri = str(root / "lake" / "rejected_documents.lance")
        self.store = store

    def ingest(self, source: Path | None = None, **options: Any) -> TextIngestReport:
        return ingest_texts(
            self.store,
            str(source or self.raw),
            self.uri,
            TextIngestOptions(**options),
            rejects_uri=self.rejects_uri,
        )

    def ingest_and_publish(self, **options: Any) -> TextIngestReport:
        report = self.ingest(**options)
        publish.publish(self.uri, report.summary.version)
        return report

    def rows(self) -> dict[str, dict[str, Any]]:
        rows = open_dataset(self.uri).to_table().to_pylist()
        by_id = {r["docid"]: r for r in rows}
        assert len(by_id) == len(rows), "docid must be unique"
        return by_id

    def version(self) -> int:
        return open_dataset(self.uri).version

    def rejects(self) -> list[dict[str, Any]]:
        return lance.dataset(self.rejects_uri).to_table().to_pylist()


@pytest.fixture()
def texts(tmp_path: Path, local_store: ObjectStore) -> Texts:
    t = Texts(tmp_path, local_store)
    write_json(t.raw / "a.json", DOCS[:2])
    _jsonl(t.raw / "b.jsonl", DOCS[2:])
    return t


def test_first_ingest_is_a_full_rebuild(texts: Texts) -> None:
    report = texts.ingest()
    assert report.committed and report.full_rebuild and report.base_version is None
    assert (report.files, report.documents, report.num_slots) == (2, 3, 3)
    assert (report.inserted, report.updated, report.unchanged) == (3, 0, 0)
    assert report.written_ids == ["d1", "d2", "d3"]
    assert report.rejected == []
    ds = open_dataset(texts.uri)
    assert ds.schema.equals(text_schema(3))
    rows = texts.rows()
    assert rows["d1"]["image_id2"] == "img2" and rows["d1"]["image_id3"] is None
    assert rows["d3"]["image_id3"] == "img4" and rows["d3"]["image_id2"] is None
    assert rows["d1"]["source_uri"] == str((texts.raw / "a.json").resolve())
    assert rows["d3"]["source_uri"] == str((texts.raw / "b.jsonl").resolve())
    assert len({r["record_sha256"] for r in rows.values()}) == 3


def test_unchanged_source_commits_nothing(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    rejects_version = lance.dataset(texts.rejects_uri).version
    again = texts.ingest()
    assert not again.committed and not again.full_rebuild
    assert again.base_version == first.summary.version
    assert again.summary.version == first.summary.version == texts.version()
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 3)
    assert again.written_ids == []
    assert lance.dataset(texts.rejects_uri).version == rejects_version


def test_new_document_in_a_new_file_is_inserted(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    before = texts.rows()
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d4", "text": "fourth", "image_id2": "img9"}])
    report = texts.ingest()
    assert report.committed and not report.full_rebuild
    assert report.base_version == first.summary.version
    assert (report.files, report.inserted, report.updated, report.unchanged) == (3, 1, 0, 3)
    assert report.written_ids == ["d4"]
    assert report.summary.version == first.summary.version + 1
    rows = texts.rows()
    assert rows["d4"]["text"] == "fourth"
    assert (rows["d4"]["image_id1"], rows["d4"]["image_id2"]) == (None, "img9")
    for docid, row in before.items():
        assert rows[docid] == row


def test_changed_text_is_updated(texts: Texts) -> None:
    texts.ingest_and_publish()
    before = texts.rows()
    changed = [dict(DOCS[0]), {**DOCS[1], "text": "second, revised"}]
    write_json(texts.raw / "a.json", changed)
    report = texts.ingest()
    assert report.committed
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 2)
    assert report.written_ids == ["d2"]
    rows = texts.rows()
    assert rows["d2"]["text"] == "second, revised"
    assert rows["d2"]["record_sha256"] != before["d2"]["record_sha256"]
    assert rows["d1"] == before["d1"] and rows["d3"] == before["d3"]


def test_changed_image_reference_is_updated(texts: Texts) -> None:
    texts.ingest_and_publish()
    _jsonl(texts.raw / "b.jsonl", [{"docid": "d3", "text": "third", "image_id1": "img1"}])
    report = texts.ingest()
    assert report.updated == 1 and report.written_ids == ["d3"]
    assert report.num_slots == 3  # K never shrinks in place
    assert texts.rows()["d3"]["image_id3"] is None


def test_reformatting_a_file_changes_nothing(texts: Texts) -> None:
    """The hash is of the record's content, not of its bytes or key order."""
    first = texts.ingest_and_publish()
    reordered = [dict(reversed(list(d.items()))) for d in DOCS[:2]]
    (texts.raw / "a.json").write_text(json.dumps(reordered, indent=4))
    report = texts.ingest()
    assert not report.committed and report.unchanged == 3
    assert texts.version() == first.summary.version


def test_k_growth_rebuilds_keeping_every_document(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    before = texts.rows()
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d5", "text": "five images", "image_id5": "img5"}])
    report = texts.ingest()
    assert report.committed and report.full_rebuild
    assert report.base_version == first.summary.version
    assert report.num_slots == 5
    assert report.inserted == 4 and sorted(report.written_ids) == ["d1", "d2", "d3", "d5"]
    ds = open_dataset(texts.uri)
    assert ds.schema.equals(text_schema(5))
    rows = texts.rows()
    assert set(rows) == {"d1", "d2", "d3", "d5"}
    for docid, row in before.items():
        assert {k: v for k, v in rows[docid].items() if k in row} == row
        assert rows[docid]["image_id4"] is None and rows[docid]["image_id5"] is None
    assert rows["d5"]["image_id5"] == "img5" and rows["d5"]["image_id1"] is None


def test_k_growth_rebuild_keeps_documents_missing_from_source(texts: Texts) -> None:
    texts.ingest_and_publish()
    before = texts.rows()["d3"]
    (texts.raw / "b.jsonl").unlink()  # d3 is gone from the source
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d5", "text": "five", "image_id5": "img5"}])
    report = texts.ingest()
    assert report.full_rebuild and report.num_slots == 5
    assert report.missing_from_source == 1 and report.deleted == 0
    rows = texts.rows()
    assert set(rows) == {"d1", "d2", "d3", "d5"}
    assert {k: v for k, v in rows["d3"].items() if k in before} == before  # widened, unchanged
    assert rows["d3"]["image_id4"] is None and rows["d3"]["image_id5"] is None


def test_k_growth_rebuild_with_delete_missing_drops_them(texts: Texts) -> None:
    texts.ingest_and_publish()
    (texts.raw / "b.jsonl").unlink()
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d5", "text": "five", "image_id5": "img5"}])
    report = texts.ingest(delete_missing=True)
    assert report.full_rebuild and report.missing_from_source == 0
    assert set(texts.rows()) == {"d1", "d2", "d5"}


def test_k_growth_rebuild_with_delete_missing_counts_them(texts: Texts) -> None:
    texts.ingest_and_publish()
    (texts.raw / "b.jsonl").unlink()
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d5", "text": "five", "image_id5": "img5"}])
    assert texts.ingest(delete_missing=True).deleted == 1


def test_deleted_document_is_kept_unless_delete_missing(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    write_json(texts.raw / "a.json", DOCS[:1])  # d2 removed
    kept = texts.ingest()
    assert not kept.committed and kept.missing_from_source == 1
    assert "d2" in texts.rows() and texts.version() == first.summary.version
    mirrored = texts.ingest(delete_missing=True)
    assert mirrored.committed and mirrored.deleted == 1 and mirrored.missing_from_source == 0
    assert set(texts.rows()) == {"d1", "d3"}


def test_failed_candidate_is_discarded_before_the_next_merge(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    published_rows = texts.rows()
    # a candidate that failed its checks: an empty text, written straight with lance
    bad = open_dataset(texts.uri).to_table().slice(0, 1)
    bad = bad.set_column(bad.schema.get_field_index("text"), "text", [[" "]])
    lance.write_dataset(bad.cast(text_schema(3)), texts.uri, mode="append")
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d4", "text": "fourth"}])
    report = texts.ingest()
    assert report.base_version == first.summary.version
    assert report.inserted == 1 and report.written_ids == ["d4"]
    rows = texts.rows()
    assert set(rows) == {*published_rows, "d4"}
    assert all(rows[d] == r for d, r in published_rows.items())


# -- quarantine ----------------------------------------------------------------------------


def _bad_lines() -> list[str]:
    return [
        json.dumps({"docid": "ok1", "text": "fine", "image_id1": "img1"}),  # line 1
        json.dumps({"text": "no id"}),  # 2
        json.dumps({"docid": "no-text"}),  # 3
        json.dumps({"docid": 7, "text": "numeric id"}),  # 4
        json.dumps({"docid": "img-int", "text": "x", "image_id1": 12}),  # 5
        json.dumps({"docid": "blank", "text": " \t\n"}),  # 6
        '{"docid": "broken", "text": ',  # 7: invalid JSON Lines line
        json.dumps({"docid": "ok1", "text": "duplicate"}),  # 8
        json.dumps({"docid": "too-many", "text": "x", "image_id9": "img9"}),  # 9
        json.dumps(["not", "an", "object"]),  # 10
        "",  # 11: blank lines are skipped, not rejected
        json.dumps({"docid": "ok2", "text": "also fine", "image_id2": None}),  # 12
        json.dumps({"docid": "zero", "text": "x", "image_id0": "img0"}),  # 13
    ]


def test_bad_records_are_quarantined_with_file_and_line(texts: Texts) -> None:
    bad_file = _jsonl(texts.raw / "c.jsonl", _bad_lines())
    broken_array = texts.raw / "d.json"
    broken_array.write_text('[\n  {"docid": "x1", "text": "a"},\n  {"docid": "x2", "text": \n]\n')
    report = texts.ingest(max_image_slots=8)
    assert report.documents == 5  # d1..d3, ok1, ok2
    assert set(texts.rows()) == {"d1", "d2", "d3", "ok1", "ok2"}
    assert texts.rows()["ok1"]["text"] == "fine"  # the first copy is kept

    rows = texts.rejects()
    assert rows == [r.__dict__ for r in report.rejected]
    c_uri, d_uri = str(bad_file.resolve()), str(broken_array.resolve())
    got = {(r["source_uri"], r["line"]): r for r in rows}
    assert set(got) == {
        (c_uri, 2),
        (c_uri, 3),
        (c_uri, 4),
        (c_uri, 5),
        (c_uri, 6),
        (c_uri, 7),
        (c_uri, 8),
        (c_uri, 9),
        (c_uri, 10),
        (c_uri, 13),
        (d_uri, 4),
    }
    assert "has no 'docid'" in got[c_uri, 2]["reason"] and got[c_uri, 2]["docid"] is None
    assert "has no 'text'" in got[c_uri, 3]["reason"] and got[c_uri, 3]["docid"] == "no-text"
    assert "docid=7 of type int" in got[c_uri, 4]["reason"] and got[c_uri, 4]["docid"] == "7"
    assert "image_id1=12 of type int" in got[c_uri, 5]["reason"]
    assert "empty text" in got[c_uri, 6]["reason"] and got[c_uri, 6]["docid"] == "blank"
    assert "invalid JSON Lines record" in got[c_uri, 7]["reason"]
    assert got[c_uri, 7]["record_index"] is None and got[c_uri, 7]["docid"] is None
    assert (
        "appears twice" in got[c_uri, 8]["reason"] and f"{c_uri} line 1" in got[c_uri, 8]["reason"]
    )
    assert got[c_uri, 8]["docid"] == "ok1"
    assert "image_id9" in got[c_uri, 9]["reason"] and "at most 8" in got[c_uri, 9]["reason"]
    assert "is a list, expected a JSON object" in got[c_uri, 10]["reason"]
    assert "image slots start at image_id1" in got[c_uri, 13]["reason"]
    # record_index counts parsed records of the file; the syntax error is not one
    assert [got[c_uri, n]["record_index"] for n in (2, 3, 4, 8, 9, 10, 13)] == [
        1,
        2,
        3,
        6,
        7,
        8,
        10,
    ]
    # a JSON array that does not parse is one rejection naming the file and line
    array_row = got[d_uri, 4]
    assert "invalid JSON" in array_row["reason"]
    assert array_row["record_index"] is None and array_row["docid"] is None


def test_json_file_with_several_values_is_read_as_json_lines(texts: Texts) -> None:
    _jsonl(
        texts.raw / "c.json",
        [{"docid": "l1", "text": "one"}, "{not json", {"docid": "l2", "text": "two"}],
    )
    report = texts.ingest()
    assert {"l1", "l2"} <= set(texts.rows())
    assert [(r.line, r.source_uri.endswith("c.json")) for r in report.rejected] == [(2, True)]


def test_duplicate_docid_across_files_keeps_the_first(texts: Texts) -> None:
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d1", "text": "impostor"}])
    report = texts.ingest()
    assert texts.rows()["d1"]["text"] == "first"
    (rej,) = report.rejected
    assert rej.source_uri.endswith("c.jsonl") and rej.line == 1 and rej.docid == "d1"
    assert "a.json record #0" in rej.reason


def test_fixed_record_leaves_the_quarantine(texts: Texts) -> None:
    path = _jsonl(texts.raw / "c.jsonl", [{"docid": "d9", "text": ""}])
    texts.ingest_and_publish()
    assert [r["docid"] for r in texts.rejects()] == ["d9"]
    _jsonl(path, [{"docid": "d9", "text": "now filled"}])
    report = texts.ingest()
    assert report.rejected == [] and texts.rejects() == []
    assert report.inserted == 1 and texts.rows()["d9"]["text"] == "now filled"


def test_only_rejects_is_an_error_but_they_are_recorded(tmp_path: Path, local_store) -> None:
    t = Texts(tmp_path, local_store)
    _jsonl(t.raw / "x.jsonl", [{"docid": "a"}, "[1,"])
    with pytest.raises(SourceNotFoundError, match="no valid document"):
        t.ingest()
    assert [r["line"] for r in t.rejects()] == [1, 2]
    with pytest.raises(DatasetNotFoundError):
        open_dataset(t.uri)


# -- content ---------------------------------------------------------------------------------

UNUSUAL_TEXTS = [
    "中文：这是一张猫的照片。",
    "emoji 🐈‍⬛ with ZWJ and skin tone 👍🏽",
    "line\u2028separator and paragraph\u2029separator inside one record",
    "combining: e\u0301 vs \u00e9, RTL: \u05e9\u05dc\u05d5\u05dd",
    'quotes " and backslash \\ and tab\t and newline\n kept',
    "nul \u0000 and bell \u0007",
    "surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_non_ascii_texts_are_kept_byte_for_byte(
    tmp_path: Path, local_store: ObjectStore, fmt: str
) -> None:
    t = Texts(tmp_path, local_store)
    docs = [{"docid": f"u{i}-文档", "text": s} for i, s in enumerate(UNUSUAL_TEXTS)]
    path = t.raw / f"unicode.{fmt}"
    if fmt == "jsonl":
        body = "\n".join(json.dumps(d, ensure_ascii=False) for d in docs)
    else:
        body = json.dumps(docs, ensure_ascii=False, indent=1)
    path.write_bytes("\ufeff".encode() + body.encode("utf-8"))  # with a BOM, as Windows writes
    report = t.ingest()
    assert report.rejected == [] and report.documents == len(docs)
    rows = t.rows()
    for d in docs:
        assert rows[d["docid"]]["text"].encode("utf-8") == d["text"].encode("utf-8")


def test_non_utf8_file_is_one_rejection(texts: Texts) -> None:
    bad = texts.raw / "latin1.jsonl"
    bad.write_bytes(
        json.dumps({"docid": "l", "text": "café"}, ensure_ascii=False).encode("latin-1")
    )
    report = texts.ingest()
    (rej,) = report.rejected
    assert rej.source_uri == str(bad.resolve()) and "not UTF-8" in rej.reason
    assert report.documents == 3


# -- fail mode -----------------------------------------------------------------------------


def test_fail_mode_names_file_and_line_and_commits_nothing(texts: Texts) -> None:
    first = texts.ingest_and_publish()
    bad = _jsonl(
        texts.raw / "c.jsonl",
        [{"docid": "n1", "text": "fine"}, {"docid": "n2", "text": "   "}],
    )
    with pytest.raises(InvalidDocumentError) as info:
        texts.ingest(on_bad_input="fail")
    assert info.value.source_uri == str(bad.resolve()) and info.value.line == 2
    assert f"{str(bad.resolve())!r} line 2" in str(info.value)
    assert "empty text" in str(info.value)
    assert texts.version() == first.summary.version
    assert texts.rejects() == []


def test_fail_mode_on_invalid_json_line(texts: Texts) -> None:
    _jsonl(texts.raw / "c.jsonl", [{"docid": "n1", "text": "fine"}, "{oops"])
    with pytest.raises(InvalidDocumentError, match=r"c\.jsonl' line 2: invalid JSON Lines"):
        texts.ingest(on_bad_input="fail")
    with pytest.raises(DatasetNotFoundError):
        open_dataset(texts.uri)


def test_fail_mode_on_duplicate_docid(texts: Texts) -> None:
    _jsonl(texts.raw / "c.jsonl", [{"docid": "d2", "text": "again"}])
    with pytest.raises(DuplicateKeyError, match=r"docid 'd2' appears twice.*c\.jsonl"):
        texts.ingest(on_bad_input="fail")


@pytest.mark.parametrize("docid", ["", "   "])
def test_blank_docid_is_quarantined(texts: Texts, docid: str) -> None:
    bad = _jsonl(texts.raw / "c.jsonl", [{"docid": docid, "text": "orphan"}])
    report = texts.ingest()
    (row,) = [r for r in report.rejected if r.source_uri == str(bad.resolve())]
    assert row.line == 1 and f"docid={docid!r}; expected a non-blank string" in row.reason
    assert docid not in texts.rows()
