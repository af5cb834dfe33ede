"""Source fingerprints (vlm_lake.ingest.source_state), on local folders and on a real S3 server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import photo_variant, put, sample_image_bytes

from vlm_lake.ingest.source_state import (
    SourceListingError,
    images_snapshot,
    snapshot,
    texts_snapshot,
)
from vlm_lake.store.object_store import ObjectStore

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


def test_local_fingerprint_is_sha256_of_keys_etags_sizes_in_listing_order(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    folder = _folder(tmp_path)
    digest = hashlib.sha256()
    fields = ["vlm-lake-source-v1", str(folder)]
    for info in local_store.list(str(folder)):
        fields += [info.key, info.etag, str(info.size)]
    for text in fields:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    assert snapshot(local_store, str(folder)).fingerprint == digest.hexdigest()


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
