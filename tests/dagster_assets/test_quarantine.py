"""Bad input at the asset tier: good data is ingested, every bad input gets a reason row."""

from __future__ import annotations

from typing import Any

import pytest
from bad_images import BAD_IMAGE_CASES, ODD_MODE_CASES
from dagster import RunConfig, materialize
from helpers import photo_variant, put, upload_seed_example

from assets import ALL_ASSETS, ingest_images_asset
from assets.ingest import IngestConfig
from resources import LakeResource
from vlm_lake.errors import InvalidImageError
from vlm_lake.lake import LakeLayout
from vlm_lake.tables import lance_io


def _table(store: Any, uri: str) -> list[dict[str, Any]]:
    return lance_io.open_dataset(uri, store.storage_options(uri)).to_table().to_pylist()


def _by_key(result: Any) -> dict[str, Any]:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def test_bad_images_are_quarantined_and_good_ones_ingested(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    originals = upload_seed_example(s3_store.client, bucket)
    keys = {name: f"lanceData/bad/{i}-{name}" for i, name in enumerate(BAD_IMAGE_CASES)}
    for name, case in BAD_IMAGE_CASES.items():  # distinct stems: truncated.jpg/.png would clash
        put(s3_store.client, bucket, keys[name], case.data)
    put(s3_store.client, bucket, "lanceData/other/image1.jpg", photo_variant(7))  # same stem
    odd = {"cmyk_jpeg": "cmyk.jpg", "rgba_png": "rgba.png", "exif_orientation_6_jpeg": "rot.jpg"}
    for case, key in odd.items():
        put(s3_store.client, bucket, f"lanceData/odd/{key}", ODD_MODE_CASES[case].data)

    result = materialize(ALL_ASSETS, resources=s3_resources)
    assert result.success
    layout = LakeLayout.at(f"s3://{bucket}/lake")

    images = {r["image_id"]: r for r in _table(s3_store, layout.images)}
    assert set(images) == {"image1", "image2", "image3", "cmyk", "rgba", "rot"}
    assert images["image1"]["image_data"] == originals["image1"]  # the first stem was kept

    rejected = {r["source_uri"]: r for r in _table(s3_store, layout.rejected_images)}
    expected = {f"s3://{bucket}/{key}" for key in keys.values()}
    expected.add(f"s3://{bucket}/lanceData/other/image1.jpg")
    assert set(rejected) == expected
    for name, case in BAD_IMAGE_CASES.items():
        row = rejected[f"s3://{bucket}/{keys[name]}"]
        if name.endswith(".txt"):
            assert row["stage"] == "listing" and "image extension" in row["reason"]
        else:
            assert row["stage"] == "decode" and case.problem in row["reason"]
    dup = rejected[f"s3://{bucket}/lanceData/other/image1.jpg"]
    assert dup["stage"] == "duplicate" and f"s3://{bucket}/lanceData/image1.jpg" in dup["reason"]

    meta = _by_key(result)
    assert meta["rejected_images"]["dagster/row_count"].value == len(expected)
    assert "image file is truncated" in meta["rejected_images"]["rejections"].value
    assert meta["image_lance"]["rejected"].value == len(expected)
    assert meta["image_lance"]["published"].value is True
    checks = {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }
    decode = checks[("image_lance", "images_decode")]
    assert decode.passed and decode.metadata["decoded"].value == 6


def test_bad_documents_are_quarantined_with_file_and_line(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    texts = f"s3://{bucket}/Lance/data/"
    lake = s3_resources["lake"]
    resources = {
        **s3_resources,
        "lake": LakeResource(
            raw_images_uri=lake.raw_images_uri, raw_texts_uri=texts, lake_uri=lake.lake_uri
        ),
    }
    assert materialize(ALL_ASSETS, resources=resources).success  # the seed, published
    put(s3_store.client, bucket, "Lance/data/broken.json", b'[{"docid": "x", "text": ]')
    put(
        s3_store.client,
        bucket,
        "Lance/data/more.jsonl",
        "\n".join(
            [
                '{"docid": "ok-1", "text": "中文 ✓", "image_id1": "image2"}',
                '{"text": "no id"}',
                '{"docid": "no-text"}',
                '{"docid": 7, "text": "int id"}',
                '{"docid": "doc_002", "text": "duplicate of the seed"}',
                "{not json",
                '{"docid": "blank", "text": "   "}',
                '{"docid": "five", "text": "five images", "image_id5": "image1"}',
            ]
        ).encode(),
    )
    result = materialize(ALL_ASSETS, resources=resources)
    assert result.success
    layout = LakeLayout.at(f"s3://{bucket}/lake")

    docs = {r["docid"]: r for r in _table(s3_store, layout.texts)}
    assert set(docs) == {"doc_001", "doc_002", "doc_003", "ok-1", "five"}
    assert docs["ok-1"]["text"] == "中文 ✓"
    assert docs["five"]["image_id5"] == "image1"  # K grew to 5
    rows = _table(s3_store, layout.rejected_documents)
    got = {(r["source_uri"].rsplit("/", 1)[1], r["line"]): r["reason"] for r in rows}
    assert "invalid JSON" in got[("broken.json", 1)]
    assert "has no 'docid'" in got[("more.jsonl", 2)]
    assert "has no 'text'" in got[("more.jsonl", 3)]
    assert "docid=7 of type int; expected a string" in got[("more.jsonl", 4)]
    # the duplicate loses to the copy already in the lake, although more.jsonl sorts first
    assert "'doc_002' appears twice" in got[("more.jsonl", 5)]
    assert docs["doc_002"]["text"] == "Another prompt with image references."
    assert "invalid JSON Lines record" in got[("more.jsonl", 6)]
    assert "empty text" in got[("more.jsonl", 7)]
    assert len(rows) == 7
    stages = {(r["source_uri"].rsplit("/", 1)[1], r["line"]): r["stage"] for r in rows}
    assert stages[("broken.json", 1)] == "parse" and stages[("more.jsonl", 6)] == "parse"
    assert stages[("more.jsonl", 2)] == "record" and stages[("more.jsonl", 5)] == "duplicate"
    assert _by_key(result)["rejected_documents"]["dagster/row_count"].value == 7
    mm = {r["docid"]: r for r in _table(s3_store, layout.multimodal)}
    assert mm["five"]["image5"] is not None and mm["doc_001"]["image4"] is None


def test_a_text_file_with_another_extension_is_quarantined_not_dropped(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    upload_seed_example(s3_store.client, bucket)
    lines = b'{"docid": "late", "text": "a JSON Lines file named .txt", "image_id1": "image1"}'
    put(s3_store.client, bucket, "Lance/data/more_docs.txt", lines)
    lake = s3_resources["lake"]
    resources = {
        **s3_resources,
        "lake": LakeResource(
            raw_images_uri=lake.raw_images_uri,
            raw_texts_uri=f"s3://{bucket}/Lance/data/",
            lake_uri=lake.lake_uri,
        ),
    }
    with caplog.at_level("WARNING"):
        result = materialize(ALL_ASSETS, resources=resources)
    assert result.success
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    docs = {r["docid"] for r in _table(s3_store, layout.texts)}
    assert docs == {"doc_001", "doc_002", "doc_003"}  # not ingested...
    (row,) = _table(s3_store, layout.rejected_documents)  # ...but quarantined, with the reason
    assert row["source_uri"] == f"s3://{bucket}/Lance/data/more_docs.txt"
    assert row["stage"] == "listing"
    assert ".json, .jsonl, .ndjson" in row["reason"] and row["line"] is None
    meta = _by_key(result)
    assert meta["text_lance"]["rejected"].value == 1
    assert meta["rejected_documents"]["dagster/row_count"].value == 1
    assert "more_docs.txt" in meta["rejected_documents"]["rejections"].value
    assert any("more_docs.txt" in r.getMessage() for r in caplog.records)  # named in the log


def test_fail_mode_stops_the_run_and_keeps_previous_versions(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    before = lance_io.open_dataset(layout.images, s3_store.storage_options(layout.images))

    put(s3_store.client, bucket, "lanceData/broken.jpg", b"this is not a jpeg at all")
    config = RunConfig(ops={"ingest_images": IngestConfig(on_bad_input="fail")})
    with pytest.raises(InvalidImageError) as err:
        materialize([ingest_images_asset], resources=s3_resources, run_config=config)
    assert f"s3://{bucket}/lanceData/broken.jpg" in str(err.value)
    after = lance_io.open_dataset(layout.images, s3_store.storage_options(layout.images))
    assert after.version == before.version and after.count_rows() == 3
