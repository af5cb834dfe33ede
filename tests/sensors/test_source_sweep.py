"""Source fingerprints by sweep (vlm_lake.ingest.source_sweep), on local folders and real S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import photo_variant, put, sample_image_bytes

from vlm_lake.ingest.source_sweep import (
    SourceListingError,
    SweepState,
    full_round,
    object_hash,
    round_fingerprint,
    sweep,
)
from vlm_lake.store.object_store import ObjectStore


def images_snapshot(store: ObjectStore, uri: str):  # noqa: ANN201
    return full_round(store, uri, "RAW_IMAGES_URI")


texts_snapshot = images_snapshot

# -- local folders -------------------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(photo_variant(1))
    (folder / "sub" / "b.png").write_bytes(photo_variant(2, fmt="PNG"))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_local_snapshot_counts_every_object_and_is_stable(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    folder = _folder(tmp_path)
    first = images_snapshot(local_store, str(folder))
    assert first.uri == str(folder)
    assert first.objects == 3  # notes.txt counts: the image ingest quarantines it
    assert first.total_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert len(first.fingerprint) == 64 and not first.is_empty
    assert images_snapshot(local_store, str(folder)) == first
    assert first.short() == first.fingerprint[:12]


def test_local_fingerprint_is_the_sum_of_object_hashes(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    folder = _folder(tmp_path)
    infos = list(local_store.list(str(folder)))
    total = sum(object_hash(i) for i in infos) % (1 << 128)
    expected = round_fingerprint(
        str(folder), len(infos), sum(i.size for i in infos), f"{total:032x}"
    )
    assert full_round(local_store, str(folder)).fingerprint == expected


def test_a_round_cut_into_slices_across_calls_gives_the_same_fingerprint(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(2345):
        (folder / f"f{i:05d}.jpg").write_bytes(b"x" * (i % 7))
    whole = full_round(local_store, str(folder))
    steps, calls, state = 0, 0, None
    while True:
        step = sweep(local_store, str(folder), state, max_pages=1, deadline=float("inf"))
        steps, calls = steps + 1, calls + step.list_calls
        if step.completed is not None:
            break
        state = step.state
        assert state.after and state.objects == 1000 * steps  # a page of 1,000 per call
        restored = SweepState.from_json(state.to_json())  # as kept in a cursor
        assert restored == state
    assert (steps, calls) == (3, 3)
    assert step.completed == whole and whole.objects == 2345
    assert step.state.objects == 0  # the next round starts afresh


def test_sweep_state_from_a_foreign_cursor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"sweep state \{'after': 1\} is not one this code"):
        SweepState.from_json({"after": 1})


def test_local_add_modify_delete_each_change_the_fingerprint(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    folder = _folder(tmp_path)
    seen = {images_snapshot(local_store, str(folder)).fingerprint}

    (folder / "c.jpg").write_bytes(photo_variant(3))  # new upload
    added = images_snapshot(local_store, str(folder))
    assert added.objects == 4 and added.fingerprint not in seen
    seen.add(added.fingerprint)

    new_bytes = photo_variant(4, size=(200, 150))  # same key, new content
    assert len(new_bytes) != (folder / "a.jpg").stat().st_size
    (folder / "a.jpg").write_bytes(new_bytes)
    modified = images_snapshot(local_store, str(folder))
    assert modified.objects == 4 and modified.fingerprint not in seen
    seen.add(modified.fingerprint)

    st = (folder / "c.jpg").stat()  # same size, touched later: the local ETag is mtime-size
    os.utime(folder / "c.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = images_snapshot(local_store, str(folder))
    assert touched.fingerprint not in seen
    seen.add(touched.fingerprint)

    (folder / "sub" / "b.png").unlink()  # deletion
    deleted = images_snapshot(local_store, str(folder))
    assert deleted.objects == 3 and deleted.fingerprint not in seen


def test_texts_snapshot_counts_every_object(tmp_path: Path, local_store: ObjectStore) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.json").write_text("[]")
    (folder / "b.JSONL").write_text("")
    (folder / "readme.md").write_text("quarantined by the text ingest (listing)")
    snap = texts_snapshot(local_store, str(folder))
    assert snap.objects == 3
    (folder / "readme.md").write_text("changed: the ingest must record it again")
    assert texts_snapshot(local_store, str(folder)) != snap
    single = texts_snapshot(local_store, str(folder / "a.json"))
    assert single.objects == 1 and single.uri == str(folder / "a.json")


def test_missing_folder_is_an_empty_snapshot_not_an_error(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    snap = images_snapshot(local_store, str(tmp_path / "nothing-here"))
    assert snap.is_empty and snap.objects == 0 and snap.total_bytes == 0
    other = images_snapshot(local_store, str(tmp_path / "elsewhere"))
    assert other.fingerprint != snap.fingerprint  # the URI is part of the fingerprint


# -- S3 ------------------------------------------------------------------------------------


def test_s3_snapshot_follows_etags(s3_store: ObjectStore, bucket: str) -> None:
    client = s3_store.client
    put(client, bucket, "raw/image1.jpg", sample_image_bytes("image1.jpg"))
    put(client, bucket, "raw/image4.png", sample_image_bytes("image4.png"))
    put(client, bucket, "rawer/not-in-prefix.jpg", photo_variant(9))
    uri = f"s3://{bucket}/raw/"
    first = images_snapshot(s3_store, uri)
    assert first.uri == f"s3://{bucket}/raw"
    assert first.objects == 2
    assert first.total_bytes == len(sample_image_bytes("image1.jpg")) + len(
        sample_image_bytes("image4.png")
    )
    # oss:// is the same location, and the same listing gives the same fingerprint
    assert images_snapshot(s3_store, f"oss://{bucket}/raw") == first

    # identical bytes uploaded again: same ETag (MD5), no change
    put(client, bucket, "raw/image1.jpg", sample_image_bytes("image1.jpg"))
    assert images_snapshot(s3_store, uri) == first

    put(client, bucket, "raw/image1.jpg", photo_variant(5))  # same key, new bytes
    modified = images_snapshot(s3_store, uri)
    assert modified.objects == 2 and modified.fingerprint != first.fingerprint

    client.delete_object(Bucket=bucket, Key="raw/image4.png")
    deleted = images_snapshot(s3_store, uri)
    assert deleted.objects == 1
    assert deleted.fingerprint not in (first.fingerprint, modified.fingerprint)


def test_s3_single_object_and_missing_prefix(s3_store: ObjectStore, bucket: str) -> None:
    put(s3_store.client, bucket, "Lance/data/testdata.json", b"[]")
    single = texts_snapshot(s3_store, f"s3://{bucket}/Lance/data/testdata.json")
    assert single.objects == 1 and single.total_bytes == 2
    assert images_snapshot(s3_store, f"s3://{bucket}/no/such/prefix/").is_empty


def test_s3_missing_bucket_is_a_clear_listing_error(s3_store: ObjectStore) -> None:
    uri = "s3://no-such-bucket-for-sensor-tests/raw/"
    with pytest.raises(SourceListingError, match="RAW_IMAGES_URI='s3://no-such-bucket") as err:
        images_snapshot(s3_store, uri)
    assert "NoSuchBucket" in str(err.value)
