"""new_uploads_sensor, evaluated tick by tick against the S3 test server and a local folder."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetSpec, Definitions, asset, multi_asset
from helpers import SEED_TESTDATA, photo_variant, put, upload_seed_example
from sensor_helpers import (
    IMAGES_PREFIX,
    TEXTS_KEY,
    Tick,
    evaluate,
    expected_selection,
    recorded_s3_requests,
    seed_objects,
)

from dagster_project.definitions import defs
from dagster_project.sensors import downstream_selection
from dagster_project.upload_cursor import UploadsCursor
from resources import LakeResource, ObjectStoreResource, UploadEventsResource
from vlm_lake.ingest.source_sweep import SourceListingError

TickFn = Callable[..., Tick]


@pytest.fixture()
def graph() -> Any:
    return defs.resolve_asset_graph()


@pytest.fixture()
def seeded(s3_store, bucket) -> dict[str, bytes]:
    return upload_seed_example(s3_store.client, bucket)


def test_first_tick_requests_every_ingest_and_downstream_asset(
    seeded, tick: TickFn, graph, bucket
) -> None:
    first = tick(None)
    assert first.skip_message is None
    run = first.run
    assert first.selected == expected_selection(
        graph, ["image_lance", "rejected_images", "text_lance", "rejected_documents"]
    )
    assert {"image_lance", "text_lance", "multimodal_lance", "training_json"} <= first.selected
    assert run.run_key.startswith("uploads-1-")
    assert run.tags["vlm_lake/changed_sources"] == "images,texts"
    assert run.tags["vlm_lake/images_objects"] == "3"
    assert run.tags["vlm_lake/texts_objects"] == "1"
    assert len(run.tags["vlm_lake/images_fingerprint"]) == 12

    cursor = first.cursor_data
    assert cursor["v"] == 2 and cursor["generation"] == 1
    assert cursor["sources"]["images"]["objects"] == 3
    assert cursor["sources"]["texts"] == {
        "objects": 1,
        "bytes": SEED_TESTDATA.stat().st_size,
        "fingerprint": cursor["sources"]["texts"]["fingerprint"],
    }
    assert (
        run.tags["vlm_lake/images_fingerprint"] == cursor["sources"]["images"]["fingerprint"][:12]
    )
    assert len(first.cursor) < 400  # no keys in the cursor


def test_no_change_skips_and_says_what_was_checked(seeded, tick: TickFn, bucket) -> None:
    first = tick(None)
    second = tick(first.cursor)
    assert second.run_requests == []
    assert second.cursor == first.cursor
    assert "no new, changed or deleted objects" in second.skip_message
    assert f"RAW_IMAGES_URI=s3://{bucket}/lanceData: 3 objects" in second.skip_message
    assert f"RAW_TEXTS_URI=s3://{bucket}/{TEXTS_KEY}: 1 objects" in second.skip_message


def test_new_upload_requests_image_side_with_a_new_run_key(
    seeded, tick: TickFn, s3_store, bucket, graph
) -> None:
    first = tick(None)
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}image9.jpg", photo_variant(9))
    second = tick(first.cursor)
    assert second.run.run_key != first.run.run_key
    assert second.run.run_key.startswith("uploads-2-")
    assert second.run.tags["vlm_lake/changed_sources"] == "images"
    assert second.run.tags["vlm_lake/images_objects"] == "4"
    assert second.selected == expected_selection(graph, ["image_lance", "rejected_images"])
    assert "rejected_images" in second.selected  # the ingest records its quarantine
    assert "image_lance" in second.selected and "text_lance" not in second.selected
    assert "multimodal_lance" in second.selected and "training_json" in second.selected
    assert "image_features" in second.selected  # new images get their features
    assert second.cursor_data["generation"] == 2
    assert tick(second.cursor).skip_message  # and then it is quiet again


def test_modified_object_same_key_new_etag_requests_a_run(
    seeded, tick: TickFn, s3_store, bucket
) -> None:
    first = tick(None)
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}image2.jpg", photo_variant(22))
    second = tick(first.cursor)
    assert second.run.tags["vlm_lake/images_objects"] == "3"
    assert second.run.run_key != first.run.run_key
    assert "image_lance" in second.selected


def test_identical_reupload_is_not_a_change(seeded, tick: TickFn, s3_store, bucket) -> None:
    first = tick(None)
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}image2.jpg", seeded["image2"])
    assert tick(first.cursor).run_requests == []


def test_deleted_object_requests_a_run_so_the_lake_mirrors_it(
    seeded, tick: TickFn, s3_store, bucket
) -> None:
    first = tick(None)
    s3_store.client.delete_object(Bucket=bucket, Key=f"{IMAGES_PREFIX}image3.jpg")
    second = tick(first.cursor)
    assert second.run.tags["vlm_lake/images_objects"] == "2"
    assert second.cursor_data["sources"]["images"]["objects"] == 2
    assert "image_lance" in second.selected


def test_non_image_upload_counts_because_ingest_quarantines_it(
    seeded, tick: TickFn, s3_store, bucket
) -> None:
    first = tick(None)
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}readme.txt", b"not an image")
    assert tick(first.cursor).run.tags["vlm_lake/images_objects"] == "4"


def test_texts_only_change_selects_text_side_not_image_ingest(
    seeded, tick: TickFn, s3_store, bucket, graph
) -> None:
    first = tick(None)
    records = json.loads(SEED_TESTDATA.read_text())
    records.append({"docid": "doc_new", "text": "a new document", "image_id1": "image1"})
    put(s3_store.client, bucket, TEXTS_KEY, json.dumps(records).encode())
    second = tick(first.cursor)
    assert second.run.tags["vlm_lake/changed_sources"] == "texts"
    assert second.selected == expected_selection(graph, ["text_lance", "rejected_documents"])
    assert {"text_lance", "multimodal_lance", "training_json"} <= second.selected
    assert "image_lance" not in second.selected
    assert "image_features" not in second.selected  # a text-only change computes none
    # the images side of the cursor is carried over unchanged
    assert second.cursor_data["sources"]["images"] == first.cursor_data["sources"]["images"]


def test_replayed_tick_gives_the_same_run_key(seeded, tick: TickFn, s3_store, bucket) -> None:
    first = tick(None)
    assert tick(None).run.run_key == first.run.run_key
    assert tick(None).cursor == first.cursor
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}image9.jpg", photo_variant(9))
    second, replay = tick(first.cursor), tick(first.cursor)
    assert replay.run.run_key == second.run.run_key
    assert replay.cursor == second.cursor


def test_reverted_upload_still_gets_a_run(seeded, tick: TickFn, s3_store, bucket) -> None:
    """A -> B -> A: the last state equals the first, but the lake holds B, so it must run."""
    first = tick(None)
    key = f"{IMAGES_PREFIX}image9.jpg"
    put(s3_store.client, bucket, key, photo_variant(9))
    second = tick(first.cursor)
    s3_store.client.delete_object(Bucket=bucket, Key=key)
    third = tick(second.cursor)
    assert (
        third.run.tags["vlm_lake/images_fingerprint"]
        == first.run.tags["vlm_lake/images_fingerprint"]
    )
    assert len({first.run.run_key, second.run.run_key, third.run.run_key}) == 3


def test_empty_or_missing_source_skips_naming_the_uri(tick: TickFn, s3_store, bucket) -> None:
    put(s3_store.client, bucket, TEXTS_KEY, SEED_TESTDATA.read_bytes())
    result = tick(None)
    assert result.run_requests == [] and result.cursor is None
    assert f"no objects at RAW_IMAGES_URI=s3://{bucket}/lanceData" in result.skip_message
    assert "RAW_TEXTS_URI" not in result.skip_message.split("Checked")[0]
    # once images arrive, the first run happens
    put(s3_store.client, bucket, f"{IMAGES_PREFIX}image1.jpg", photo_variant(1))
    assert tick(result.cursor).run.run_key.startswith("uploads-1-")


def test_emptied_source_keeps_the_cursor(seeded, tick: TickFn, s3_store, bucket) -> None:
    first = tick(None)
    s3_store.client.delete_object(Bucket=bucket, Key=TEXTS_KEY)
    emptied = tick(first.cursor)
    assert emptied.run_requests == [] and emptied.cursor == first.cursor
    assert f"RAW_TEXTS_URI=s3://{bucket}/{TEXTS_KEY}" in emptied.skip_message
    put(s3_store.client, bucket, TEXTS_KEY, SEED_TESTDATA.read_bytes())  # restored as it was
    assert tick(first.cursor).run_requests == []


def test_listing_error_fails_the_tick_naming_the_uri(object_store_resource) -> None:
    resources = {
        "lake": LakeResource(
            raw_images_uri="s3://no-such-bucket-vlm/lanceData/",
            raw_texts_uri="s3://no-such-bucket-vlm/testdata.json",
        ),
        "object_store": object_store_resource,
        "upload_events": UploadEventsResource(),
    }
    with pytest.raises(SourceListingError, match=r"RAW_IMAGES_URI='s3://no-such-bucket-vlm/"):
        evaluate(None, resources)


def test_foreign_cursor_is_a_clear_error(seeded, sensor_resources) -> None:
    with pytest.raises(ValueError, match=r"cursor='12345' is not a new_uploads_sensor cursor"):
        evaluate("12345", sensor_resources)


def test_local_folders(tmp_path: Path) -> None:
    images, texts = tmp_path / "images", tmp_path / "texts"
    images.mkdir()
    texts.mkdir()
    for i in range(3):
        (images / f"image{i}.jpg").write_bytes(photo_variant(i))
    (texts / "testdata.json").write_bytes(SEED_TESTDATA.read_bytes())
    resources = {
        "lake": LakeResource(
            raw_images_uri=str(images), raw_texts_uri=str(texts), lake_uri=str(tmp_path / "lake")
        ),
        "object_store": ObjectStoreResource(),
        "upload_events": UploadEventsResource(),
    }
    first = evaluate(None, resources)
    assert first.run.tags["vlm_lake/images_objects"] == "3"
    assert evaluate(first.cursor, resources).run_requests == []
    (images / "image1.jpg").write_bytes(photo_variant(11, size=(200, 150)))
    second = evaluate(first.cursor, resources)
    assert second.run.tags["vlm_lake/changed_sources"] == "images"
    (texts / "more.jsonl").write_text('{"docid": "d9", "text": "t", "image_id1": "image0"}\n')
    third = evaluate(second.cursor, resources)
    assert third.run.tags["vlm_lake/changed_sources"] == "texts"
    assert third.run.tags["vlm_lake/texts_objects"] == "2"


def test_5000_objects_paginated_and_no_image_bytes_downloaded(
    s3_store, bucket, sensor_resources
) -> None:
    variants = [photo_variant(i, size=(32, 24)) for i in range(16)]  # real JPEG bytes
    count = 5000
    started = time.perf_counter()
    seed_objects(
        bucket, ((f"{IMAGES_PREFIX}img_{i:05d}.jpg", variants[i % 16]) for i in range(count))
    )
    put(s3_store.client, bucket, TEXTS_KEY, SEED_TESTDATA.read_bytes())
    uploaded = time.perf_counter() - started
    etag = s3_store.client.head_object(Bucket=bucket, Key=f"{IMAGES_PREFIX}img_00001.jpg")["ETag"]
    assert etag.strip('"') == hashlib.md5(variants[1]).hexdigest()  # as if PUT over HTTP

    started = time.perf_counter()
    with recorded_s3_requests() as requests:
        first = evaluate(None, sensor_resources)
    ticked = time.perf_counter() - started
    print(f"\nstored {count} objects in {uploaded:.1f}s; one tick listed them in {ticked:.2f}s")

    assert first.run.tags["vlm_lake/images_objects"] == str(count)
    assert first.cursor_data["sources"]["images"]["objects"] == count
    assert first.cursor_data["sources"]["images"]["bytes"] == sum(
        len(variants[i % 16]) for i in range(count)
    )
    assert len(first.cursor) < 400

    lists = [r for r in requests if r.method == "GET" and "list-type" in r.query]
    image_pages = [r for r in lists if r.query.get("prefix") == [IMAGES_PREFIX]]
    assert len(image_pages) == count // 1000  # 1,000 keys per page
    gets = [r for r in requests if r.method == "GET"]
    assert gets == lists, (
        f"object GETs (downloads) in a tick: {[r for r in gets if r not in lists]}"
    )
    assert all(r.path.strip("/") == bucket for r in gets)
    assert {r.method for r in requests} <= {"GET", "HEAD"}  # HEAD: metadata of the texts file
    assert ticked < 20


def test_selection_includes_required_multi_asset_outputs() -> None:
    """When ingest is a multi-asset (data + quarantine table), both outputs are selected."""

    @multi_asset(specs=[AssetSpec("image_lance"), AssetSpec("rejected_images")])
    def ingest_images():  # noqa: ANN202
        return None

    @asset
    def text_lance() -> None:
        return None

    @asset(deps=["image_lance", "text_lance"])
    def multimodal_lance() -> None:
        return None

    @asset(deps=["rejected_images"])
    def quarantine_report() -> None:
        return None

    toy = Definitions(assets=[ingest_images, text_lance, multimodal_lance, quarantine_report])
    repository = toy.get_repository_def()
    names = {
        k.to_user_string() for k in downstream_selection(repository, [AssetKey("image_lance")])
    }
    assert names == {"image_lance", "rejected_images", "multimodal_lance", "quarantine_report"}
    assert names == expected_selection(toy.resolve_asset_graph(), ["image_lance"])
    texts = downstream_selection(repository, [AssetKey("text_lance")])
    assert {k.to_user_string() for k in texts} == {"text_lance", "multimodal_lance"}


def test_cursor_round_trip() -> None:
    cursor = UploadsCursor(3, {"images": {"objects": 1, "bytes": 2, "fingerprint": "ab"}})
    parsed = UploadsCursor.parse(cursor.to_json())
    assert parsed == cursor
    assert parsed.fingerprint("images") == "ab" and parsed.fingerprint("texts") is None
    assert UploadsCursor.parse(None) is None and UploadsCursor.parse("") is None
