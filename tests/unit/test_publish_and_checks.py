"""Write-check-publish (the ``published`` tag), the checks' evidence, and ``promote``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
from helpers import photo_variant, sha256

from vlm_lake import checks
from vlm_lake.errors import DatasetNotFoundError, NotPublishedError
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA, multimodal_schema, text_schema
from vlm_lake.tables.lance_io import open_dataset
from vlm_lake.training.export_json import format_record, promote, staging_uri


def _write(uri: Path | str, rows: list[dict[str, Any]], schema: pa.Schema, mode: str = "create"):
    return lance.write_dataset(pa.Table.from_pylist(rows, schema=schema), str(uri), mode=mode)


def _numbers(tmp_path: Path, versions: int) -> str:
    """A small dataset with ``versions`` versions; version v holds rows 0..v-1."""
    uri = str(tmp_path / "numbers.lance")
    schema = pa.schema([pa.field("n", pa.int64())])
    for v in range(1, versions + 1):
        _write(uri, [{"n": v - 1}], schema, mode="create" if v == 1 else "append")
    return uri


def _ns(uri: str, version: int | str | None = None) -> list[int]:
    return sorted(open_dataset(uri, None, version).to_table().column("n").to_pylist())


# -- publish -------------------------------------------------------------------------------


def test_published_is_none_without_dataset_or_tag(tmp_path: Path) -> None:
    assert publish.published(str(tmp_path / "nothing.lance")) is None
    uri = _numbers(tmp_path, 1)
    assert publish.published(uri) is None


def test_publish_records_version_and_lineage(tmp_path: Path) -> None:
    uri = _numbers(tmp_path, 3)
    publish.publish(uri, 2, lineage={"texts_version": "7", "images_version": "4"})
    pub = publish.published(uri)
    assert pub == publish.Published(2, {"texts_version": "7", "images_version": "4"})
    # the bookkeeping key is not part of the lineage, but it is stored with the tag
    tag = lance.dataset(uri).tags.list()[publish.PUBLISHED_TAG]
    assert tag["version"] == 2 and tag["metadata"]["version"] == "2"

    publish.publish(uri, 3)  # moving the tag replaces the lineage
    assert publish.published(uri) == publish.Published(3, {})


def test_stale_tag_metadata_is_ignored(tmp_path: Path) -> None:
    uri = _numbers(tmp_path, 2)
    publish.publish(uri, 1, lineage={"texts_version": "5"})
    # a crash between moving the tag and writing its metadata
    lance.dataset(uri).tags.update(publish.PUBLISHED_TAG, 2)
    assert publish.published(uri) == publish.Published(2, {})


def test_open_published_reads_the_tag_not_the_latest(tmp_path: Path) -> None:
    uri = _numbers(tmp_path, 3)
    with pytest.raises(NotPublishedError) as info:
        publish.open_published(uri)
    assert uri in str(info.value) and "latest unchecked version: 3" in str(info.value)
    with pytest.raises(DatasetNotFoundError):
        publish.open_published(str(tmp_path / "missing.lance"))
    publish.publish(uri, 2)
    ds = publish.open_published(uri)
    assert ds.version == 2 and _ns(uri, ds.version) == [0, 1]
    assert sorted(ds.to_table().column("n").to_pylist()) == [0, 1]


def test_discard_unpublished_restores_the_published_version(tmp_path: Path) -> None:
    uri = _numbers(tmp_path, 3)
    assert publish.discard_unpublished(uri) is None  # nothing published: caller rebuilds
    assert open_dataset(uri).version == 3

    publish.publish(uri, 1)
    assert publish.discard_unpublished(uri) == 1
    latest = open_dataset(uri)
    assert latest.version == 4  # a restore is a new version: history is kept
    assert _ns(uri) == [0]
    assert _ns(uri, 3) == [0, 1, 2]
    assert publish.published(uri) == publish.Published(1, {})

    # published == latest content but not latest number: restoring again would be harmless,
    # publishing the latest makes it a no-op
    publish.publish(uri, 4)
    assert publish.discard_unpublished(uri) == 4
    assert open_dataset(uri).version == 4


# -- image checks ----------------------------------------------------------------------------


def _image_row(image_id: str, data: bytes, digest: str | None = None) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "image_data": data,
        "source_uri": f"/raw/{image_id}.jpg",
        "source_etag": "e",
        "sha256": digest or sha256(data),
        "size_bytes": len(data),
        "format": "jpeg",
        "width": 1,
        "height": 1,
    }


def _by_name(outcomes: list[checks.CheckOutcome]) -> dict[str, checks.CheckOutcome]:
    by_name = {o.name: o for o in outcomes}
    assert len(by_name) == len(outcomes)
    return by_name


def test_image_checks_pass_on_good_data(tmp_path: Path) -> None:
    rows = [_image_row(f"i{k}", photo_variant(k, size=(24, 24))) for k in range(4)]
    ds = _write(tmp_path / "images.lance", rows, IMAGE_SCHEMA)
    got = _by_name(checks.check_images(ds, batch_rows=3))
    assert set(got) == {
        "image_id_unique",
        "images_decode",
        "duplicate_images",
        "perceptual_duplicates",
    }
    assert all(o.passed for o in got.values())
    assert checks.blocking_failures(got.values()) == []
    assert got["image_id_unique"].observed == 0 and got["image_id_unique"].blocking
    assert got["images_decode"].details == {"decoded": 4, "failures": []}
    assert "every row" in got["images_decode"].expected
    assert got["duplicate_images"].details == {"groups": []}
    assert not got["duplicate_images"].blocking


def test_image_checks_fail_on_bad_tables(tmp_path: Path) -> None:
    good = photo_variant(1, size=(24, 24))
    copy = photo_variant(2, size=(24, 24))
    rows = [
        _image_row("a", good),
        _image_row("a", photo_variant(3, size=(24, 24))),  # duplicate image_id
        _image_row("junk", b"definitely not an image"),  # undecodable
        _image_row("c1", copy),
        _image_row("c2", copy),  # same bytes under another id
        _image_row("c3", copy),
    ]
    ds = _write(tmp_path / "images.lance", rows, IMAGE_SCHEMA)
    got = _by_name(checks.check_images(ds, batch_rows=2))

    unique = got["image_id_unique"]
    assert not unique.passed and unique.blocking and unique.observed == 1
    assert unique.details == {"duplicates": [{"image_id": "a", "rows": 2}]}
    assert "among 6 rows" in unique.expected

    decode = got["images_decode"]
    assert not decode.passed and decode.blocking and decode.observed == 1
    assert decode.details["decoded"] == 6
    (failure,) = decode.details["failures"]
    assert failure["image_id"] == "junk" and "cannot identify" in failure["problem"]

    dup = got["duplicate_images"]
    assert not dup.passed and not dup.blocking and dup.observed == 1
    assert dup.details == {
        "groups": [{"sha256": sha256(copy)[:16], "image_ids": ["c1", "c2", "c3"]}]
    }

    assert {o.name for o in checks.blocking_failures(got.values())} == {
        "image_id_unique",
        "images_decode",
    }


def test_image_decode_check_only_reads_written_ids(tmp_path: Path) -> None:
    rows = [
        _image_row("old-junk", b"junk written by an earlier, buggy run"),
        _image_row("new", photo_variant(5, size=(24, 24))),
        _image_row("o'brien", photo_variant(6, size=(24, 24))),  # a quote in the id
    ]
    ds = _write(tmp_path / "images.lance", rows, IMAGE_SCHEMA)
    got = _by_name(checks.check_images(ds, written_ids=["new", "o'brien"]))
    assert got["images_decode"].passed
    assert got["images_decode"].details["decoded"] == 2
    assert "the 2 rows this run wrote" in got["images_decode"].expected
    got = _by_name(checks.check_images(ds, written_ids=["old-junk"]))
    assert not got["images_decode"].passed
    got = _by_name(checks.check_images(ds, written_ids=[]))
    assert got["images_decode"].passed and got["images_decode"].details["decoded"] == 0


# -- text checks -----------------------------------------------------------------------------


def _doc(docid: str, text: str, k: int = 2, **ids: str) -> dict[str, Any]:
    row: dict[str, Any] = {"docid": docid, "text": text}
    row.update({f"image_id{n}": ids.get(f"image_id{n}") for n in range(1, k + 1)})
    row.update({"source_uri": "/raw/t.json", "record_sha256": sha256(docid.encode())})
    return row


def test_text_checks_pass_on_good_data(tmp_path: Path) -> None:
    ds = _write(
        tmp_path / "t.lance", [_doc("a", "x", image_id1="i"), _doc("b", "y")], text_schema(2)
    )
    got = _by_name(checks.check_texts(ds))
    assert set(got) == {"docid_unique", "text_not_empty", "schema_as_contracted"}
    assert all(o.passed and o.blocking for o in got.values())
    assert got["schema_as_contracted"].details == {"image_slots": 2}
    assert got["schema_as_contracted"].observed == got["schema_as_contracted"].expected


def test_text_checks_fail_on_bad_tables(tmp_path: Path) -> None:
    rows = [
        _doc("a", "x"),
        _doc("a", "again"),
        _doc("e1", ""),
        _doc("e2", " \n\t"),
        _doc("ok", "z"),
    ]
    ds = _write(tmp_path / "t.lance", rows, text_schema(2))
    got = _by_name(checks.check_texts(ds))
    assert not got["docid_unique"].passed and got["docid_unique"].observed == 1
    assert got["docid_unique"].details == {"duplicates": [{"docid": "a", "rows": 2}]}
    empty = got["text_not_empty"]
    assert not empty.passed and empty.observed == 2 and empty.details == {"docids": ["e1", "e2"]}
    assert "among 5" in empty.expected
    assert got["schema_as_contracted"].passed


@pytest.mark.parametrize(
    ("schema", "row"),
    [
        # no provenance columns (an older writer)
        (
            pa.schema(
                [
                    pa.field("docid", pa.string(), False),
                    pa.field("text", pa.string(), False),
                    pa.field("image_id1", pa.string()),
                ]
            ),
            {"docid": "a", "text": "x", "image_id1": None},
        ),
        # an image id stored as a number
        (
            pa.schema(
                [
                    pa.field("docid", pa.string(), False),
                    pa.field("text", pa.string(), False),
                    pa.field("image_id1", pa.int64()),
                    pa.field("source_uri", pa.string(), False),
                    pa.field("record_sha256", pa.string(), False),
                ]
            ),
            {"docid": "a", "text": "x", "image_id1": 3, "source_uri": "u", "record_sha256": "h"},
        ),
        # no image slot at all
        (
            pa.schema(
                [
                    pa.field("docid", pa.string(), False),
                    pa.field("text", pa.string(), False),
                    pa.field("source_uri", pa.string(), False),
                    pa.field("record_sha256", pa.string(), False),
                ]
            ),
            {"docid": "a", "text": "x", "source_uri": "u", "record_sha256": "h"},
        ),
        # a nullable docid
        (
            pa.schema(
                [
                    pa.field("docid", pa.string()),
                    pa.field("text", pa.string(), False),
                    pa.field("image_id1", pa.string()),
                    pa.field("source_uri", pa.string(), False),
                    pa.field("record_sha256", pa.string(), False),
                ]
            ),
            {"docid": "a", "text": "x", "image_id1": None, "source_uri": "u", "record_sha256": "h"},
        ),
    ],
    ids=["no-provenance", "int-image-id", "no-slots", "nullable-docid"],
)
def test_text_schema_check_fails_on_wrong_schema(
    tmp_path: Path, schema: pa.Schema, row: dict[str, Any]
) -> None:
    ds = _write(tmp_path / "t.lance", [row], schema)
    outcome = _by_name(checks.check_texts(ds))["schema_as_contracted"]
    assert not outcome.passed and outcome.blocking
    if "image_id1" in schema.names:
        assert outcome.observed != outcome.expected and outcome.details == {"image_slots": 1}
    else:  # the contract is "K >= 1": the listed schemas agree, the slot count says why
        assert outcome.details == {"image_slots": 0}
    assert outcome.observed.startswith("docid: string")
    assert "record_sha256: string not null" in outcome.expected


# -- multimodal checks -----------------------------------------------------------------------


def _mm(docid: str, *ids: str | None) -> dict[str, Any]:
    return {
        "docid": docid,
        "text": f"text of {docid}",
        "image_id1": ids[0] if ids else None,
        "image_id2": ids[1] if len(ids) > 1 else None,
        "image1": b"1" if ids and ids[0] else None,
        "image2": b"2" if len(ids) > 1 and ids[1] else None,
    }


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Any, Any]:
    texts = _write(
        tmp_path / "texts.lance",
        [_doc("a", "x", image_id1="i1"), _doc("b", "y", image_id2="i2"), _doc("c", "z")],
        text_schema(2),
    )
    images = _write(
        tmp_path / "images.lance",
        [_image_row("i1", b"x"), _image_row("i2", b"y")],
        IMAGE_SCHEMA,
    )
    return texts, images


def test_multimodal_checks_pass_on_good_data(tmp_path: Path, inputs: tuple[Any, Any]) -> None:
    rows = [_mm("a", "i1"), _mm("b", None, "i2"), _mm("c")]
    ds = _write(tmp_path / "mm.lance", rows, multimodal_schema(2))
    got = _by_name(checks.check_multimodal(ds, *inputs))
    assert set(got) == {"one_row_per_document", "dangling_references"}
    assert all(o.passed for o in got.values())
    assert got["one_row_per_document"].observed == "3 rows for 3 docids"
    assert got["dangling_references"].observed == 0


def test_multimodal_checks_fail_on_missing_duplicate_and_extra_rows(
    tmp_path: Path, inputs: tuple[Any, Any]
) -> None:
    rows = [_mm("a", "i1"), _mm("a", "i1"), _mm("zz")]  # b and c missing, a twice, zz extra
    ds = _write(tmp_path / "mm.lance", rows, multimodal_schema(2))
    outcome = _by_name(checks.check_multimodal(ds, *inputs))["one_row_per_document"]
    assert not outcome.passed and outcome.blocking
    assert outcome.observed == "3 rows for 2 docids"
    assert "each of the 3 documents" in outcome.expected
    assert outcome.details == {"duplicated": ["a"], "missing": ["b", "c"], "unexpected": ["zz"]}


def test_multimodal_dangling_references_are_listed(tmp_path: Path, inputs: tuple[Any, Any]) -> None:
    rows = [_mm("a", "i1", "gone1"), _mm("b", "gone2", "i2"), _mm("c", None, "gone1")]
    ds = _write(tmp_path / "mm.lance", rows, multimodal_schema(2))
    got = _by_name(checks.check_multimodal(ds, *inputs))
    assert got["one_row_per_document"].passed
    dangling = got["dangling_references"]
    assert not dangling.passed and not dangling.blocking and dangling.observed == 3
    assert sorted(dangling.details["references"], key=lambda r: (r["docid"], r["slot"])) == [
        {"docid": "a", "slot": "image_id2", "image_id": "gone1"},
        {"docid": "b", "slot": "image_id1", "image_id": "gone2"},
        {"docid": "c", "slot": "image_id2", "image_id": "gone1"},
    ]
    assert checks.blocking_failures(got.values()) == []


# -- training JSON checks --------------------------------------------------------------------


def _training_file(path: Path, records: list[str]) -> str:
    path.write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    return str(path)


def test_training_json_checks_pass_on_a_good_file(tmp_path: Path, local_store) -> None:
    img = photo_variant(3, size=(24, 24), fmt="PNG")
    uri = _training_file(
        tmp_path / "train.json",
        [format_record("一只猫", [img, None, img]), format_record("no images", [None])],
    )
    got = _by_name(checks.check_training_json(local_store, uri, 2))
    assert set(got) == {"parses", "record_count_matches", "images_decode"}
    assert all(o.passed and o.blocking for o in got.values())
    assert got["parses"].observed == "valid JSON array"
    assert got["record_count_matches"].observed == 2
    assert got["images_decode"].details == {"images": 2, "failures": []}


def test_training_json_empty_array_passes_for_zero_records(tmp_path: Path, local_store) -> None:
    path = tmp_path / "train.json"
    path.write_text("[\n]\n")
    got = _by_name(checks.check_training_json(local_store, str(path), 0))
    assert all(o.passed for o in got.values())


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('[\n{"instruction": "a", "input": [], "output": ""}\n', "line 3"),  # no closing ]
        ('[\n{"instruction": "a", "input": [], "output": ""},\n]\n', "line 3"),  # trailing ,
        ('{"instruction": "a", "input": [], "output": ""}\n', "line 1"),  # not an array
        ('[\n{"instruction": "a", "input": [], "output": ""}\n]\n]\n', "line 4"),  # extra data
    ],
    ids=["unclosed", "trailing-comma", "object", "extra-data"],
)
def test_training_json_that_does_not_parse(
    tmp_path: Path, local_store, body: str, where: str
) -> None:
    path = tmp_path / "train.json"
    path.write_text(body)
    got = _by_name(checks.check_training_json(local_store, str(path), 1))
    assert not got["parses"].passed
    assert where in got["parses"].observed
    assert not got["record_count_matches"].passed and not got["images_decode"].passed


def test_training_json_with_the_wrong_record_count(tmp_path: Path, local_store) -> None:
    uri = _training_file(tmp_path / "t.json", [format_record(f"r{i}", []) for i in range(3)])
    got = _by_name(checks.check_training_json(local_store, uri, 4))
    assert got["parses"].passed
    outcome = got["record_count_matches"]
    assert not outcome.passed and outcome.observed == 3 and outcome.expected.startswith("4 records")


def test_training_json_with_bad_hex_and_non_images(tmp_path: Path, local_store) -> None:
    img = photo_variant(4, size=(24, 24))
    records = [
        format_record("good", [img]),
        json.dumps({"instruction": "bad hex", "input": ["zz12"], "output": ""}),
        json.dumps({"instruction": "odd length", "input": [img.hex()[:-1]], "output": ""}),
        json.dumps({"instruction": "text", "input": [img.hex(), b"hello".hex()], "output": ""}),
        json.dumps(
            {"instruction": "truncated", "input": [img[: len(img) // 2].hex()], "output": ""}
        ),
        json.dumps({"instruction": "keys", "input": [], "output": "", "extra": 1}),
        json.dumps({"instruction": 3, "input": [], "output": ""}),
        json.dumps({"instruction": "x", "input": [1], "output": ""}),
        json.dumps(["not", "an", "object"]),
    ]
    uri = _training_file(tmp_path / "t.json", records)
    got = _by_name(checks.check_training_json(local_store, uri, len(records)))
    assert got["parses"].passed and got["record_count_matches"].passed
    outcome = got["images_decode"]
    assert not outcome.passed
    failures = outcome.details["failures"]
    assert outcome.observed == len(failures) == 8
    by_record = {(f["record"], f.get("input")): f["problem"] for f in failures}
    assert by_record[1, 0].startswith("not hex")
    assert by_record[2, 0].startswith("not hex")
    assert "cannot identify" in by_record[3, 1] and (3, 0) not in by_record
    assert "truncated" in by_record[4, 0]
    assert "expected ['input', 'instruction', 'output']" in by_record[5, None]
    assert "instruction must be a string" in by_record[6, None]
    assert "hex strings" in by_record[7, None]
    assert "a list, expected an object" in by_record[8, None]
    assert outcome.details["images"] == 6  # hex strings seen in well-formed records


def test_training_json_decode_can_be_skipped(tmp_path: Path, local_store) -> None:
    uri = _training_file(
        tmp_path / "t.json",
        [json.dumps({"instruction": "x", "input": [b"hello".hex()], "output": ""})],
    )
    got = _by_name(checks.check_training_json(local_store, uri, 1, decode=False))
    assert got["images_decode"].passed and got["images_decode"].details["images"] == 1


# -- promote ---------------------------------------------------------------------------------


def test_promote_local_replaces_the_published_file(tmp_path: Path, local_store) -> None:
    dst = tmp_path / "out" / "training_data.json"
    dst.parent.mkdir()
    dst.write_text("old")
    candidate = staging_uri(str(dst))
    assert candidate != str(dst)
    local_store.write_bytes(candidate, b"[\n]\n")
    promote(local_store, candidate, str(dst))
    assert dst.read_bytes() == b"[\n]\n"
    assert not Path(candidate).exists()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["training_data.json"]


def test_promote_local_to_a_new_folder(tmp_path: Path, local_store) -> None:
    src = tmp_path / "candidate.json"
    src.write_bytes(b"data")
    dst = tmp_path / "new" / "folder" / "training_data.json"
    promote(local_store, str(src), str(dst))
    assert dst.read_bytes() == b"data" and not src.exists()


def test_promote_refuses_mixing_local_and_remote(tmp_path: Path, local_store) -> None:
    src = tmp_path / "c.json"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="both be local or both remote"):
        promote(local_store, str(src), "s3://bucket/training_data.json")
    assert src.exists()


def test_promote_on_s3(s3_store: ObjectStore, bucket: str) -> None:
    dst = f"s3://{bucket}/lake/training_data.json"
    s3_store.write_bytes(dst, b"old content")
    candidate = staging_uri(dst)
    payload = b"[\n" + b"x" * 70_000 + b"\n]\n"
    s3_store.write_bytes(candidate, payload)
    promote(s3_store, candidate, dst)
    assert s3_store.read_bytes(dst) == payload
    assert not s3_store.exists(candidate)
    keys = [o.key for o in s3_store.list(f"s3://{bucket}/lake/")]
    assert keys == ["lake/training_data.json"]
