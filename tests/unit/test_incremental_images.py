"""Incremental image ingest: ETag diff against the published version, merge, quarantine."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
from bad_images import BAD_IMAGE_CASES
from helpers import photo_variant, put, sha256

from vlm_lake.errors import DatasetNotFoundError, DuplicateKeyError, InvalidImageError
from vlm_lake.ingest.changes import IngestReport
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.quarantine import read_rejected_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.tables.lance_io import open_dataset


class Lake:
    """A raw image folder and the lake it is ingested into (local paths)."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.raw = root / "raw"
        self.raw.mkdir(parents=True)
        self.images_uri = str(root / "lake" / "images.lance")
        self.rejects_uri = str(root / "lake" / "rejected_images.lance")
        self.store = store

    def write(self, rel: str, data: bytes) -> Path:
        path = self.raw / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        old_mtime = path.stat().st_mtime_ns if path.exists() else None
        path.write_bytes(data)
        if old_mtime is not None:  # make sure the ETag (mtime_ns-size) moves even on coarse clocks
            new = max(path.stat().st_mtime_ns, old_mtime + 1_000_000_000)
            os.utime(path, ns=(new, new))
        return path

    def ingest(self, **options: Any) -> IngestReport:
        return ingest_images(
            self.store,
            str(self.raw),
            self.images_uri,
            ImageIngestOptions(workers=2, **options),
            rejects_uri=self.rejects_uri,
        )

    def ingest_and_publish(self, **options: Any) -> IngestReport:
        report = self.ingest(**options)
        publish.publish(self.images_uri, report.summary.version)
        return report

    def rows(self, version: int | None = None) -> dict[str, dict[str, Any]]:
        table = open_dataset(self.images_uri, None, version).to_table()
        rows = table.to_pylist()
        by_id = {r["image_id"]: r for r in rows}
        assert len(by_id) == len(rows), "image_id must be unique"
        return by_id

    def latest_version(self) -> int:
        return open_dataset(self.images_uri).version

    def rejects(self) -> list[dict[str, Any]]:
        return [r.__dict__ for r in read_rejected_images(self.rejects_uri)]


@pytest.fixture()
def lake(tmp_path: Path, local_store: ObjectStore) -> Lake:
    lake = Lake(tmp_path, local_store)
    for i, rel in enumerate(["a/img0.jpg", "a/img1.jpg", "b/img2.png"]):
        lake.write(
            rel, photo_variant(i, size=(48, 40), fmt="PNG" if rel.endswith("png") else "JPEG")
        )
    return lake


def test_first_ingest_is_a_full_rebuild(lake: Lake) -> None:
    report = lake.ingest()
    assert report.committed and report.full_rebuild
    assert report.base_version is None
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (3, 0, 0, 0)
    assert report.objects == 3
    assert report.bytes == sum(p.stat().st_size for p in lake.raw.rglob("*") if p.is_file())
    assert sorted(report.written_ids) == ["img0", "img1", "img2"]
    assert report.rejected == []
    assert report.summary.num_rows == 3
    assert report.summary.version == lake.latest_version()
    rows = lake.rows()
    for image_id, row in rows.items():
        data = Path(row["source_uri"]).read_bytes()
        assert row["image_data"] == data and row["sha256"] == sha256(data)
        stat = Path(row["source_uri"]).stat()
        assert row["source_etag"] == f"{stat.st_mtime_ns}-{stat.st_size}"
        assert Path(row["source_uri"]).stem == image_id
    # nothing is published until the caller says so
    assert publish.published(lake.images_uri) is None


def test_rerun_without_change_commits_nothing(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    rejects_version = lance.dataset(lake.rejects_uri).version
    again = lake.ingest()
    assert not again.committed and not again.full_rebuild
    assert again.base_version == first.summary.version
    assert again.summary.version == first.summary.version == lake.latest_version()
    assert (again.objects, again.bytes) == (0, 0)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert again.unchanged == 3
    assert again.written_ids == []
    # the (empty) rejections table is not rewritten either
    assert lance.dataset(lake.rejects_uri).version == rejects_version
    assert lake.rejects() == []


def test_new_object_is_the_only_download(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    before = lake.rows()
    new = photo_variant(7, size=(50, 30))
    lake.write("c/new.jpg", new)
    report = lake.ingest()
    assert report.committed and not report.full_rebuild
    assert report.base_version == first.summary.version
    assert (report.inserted, report.updated, report.deleted) == (1, 0, 0)
    assert report.unchanged == 3
    assert report.objects == 1 and report.bytes == len(new)
    assert report.written_ids == ["new"]
    assert report.summary.version == first.summary.version + 1
    after = lake.rows()
    assert set(after) == {"img0", "img1", "img2", "new"}
    assert after["new"]["image_data"] == new and after["new"]["sha256"] == sha256(new)
    assert (after["new"]["width"], after["new"]["height"]) == (50, 30)
    for image_id, row in before.items():
        assert after[image_id] == row
    # the published version is untouched by the candidate
    assert len(publish.open_published(lake.images_uri).to_table()) == 3


def test_modified_object_is_updated(lake: Lake) -> None:
    lake.ingest_and_publish()
    old = lake.rows()["img1"]
    new = photo_variant(21, size=(64, 48))
    assert new != old["image_data"]
    path = lake.write("a/img1.jpg", new)
    report = lake.ingest()
    assert report.committed
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (0, 1, 0, 2)
    assert report.objects == 1 and report.written_ids == ["img1"]
    rows = lake.rows()
    assert len(rows) == 3
    row = rows["img1"]
    assert row["image_data"] == new
    assert row["sha256"] == sha256(new) != old["sha256"]
    assert row["size_bytes"] == len(new)
    assert (row["width"], row["height"]) == (64, 48)
    stat = path.stat()
    assert row["source_etag"] == f"{stat.st_mtime_ns}-{stat.st_size}" != old["source_etag"]


def test_touched_object_with_same_bytes_is_downloaded_again(lake: Lake) -> None:
    """A new mtime is a new local ETag: the object is re-read, the row keeps its bytes."""
    lake.ingest_and_publish()
    old = lake.rows()["img0"]
    path = lake.raw / "a" / "img0.jpg"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = lake.ingest()
    assert report.objects == 1 and report.updated == 1
    row = lake.rows()["img0"]
    assert row["image_data"] == old["image_data"] and row["sha256"] == old["sha256"]
    assert row["source_etag"] != old["source_etag"]


def test_deleted_object_is_kept_unless_delete_missing(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    (lake.raw / "a" / "img0.jpg").unlink()
    kept = lake.ingest()
    assert not kept.committed
    assert kept.missing_from_source == 1 and kept.deleted == 0
    assert kept.summary.version == first.summary.version
    assert "img0" in lake.rows()

    mirrored = lake.ingest(delete_missing=True)
    assert mirrored.committed and not mirrored.full_rebuild
    assert mirrored.deleted == 1 and mirrored.missing_from_source == 0
    assert (mirrored.inserted, mirrored.updated, mirrored.objects) == (0, 0, 0)
    assert mirrored.summary.version == first.summary.version + 1
    assert set(lake.rows()) == {"img1", "img2"}


def test_duplicate_stem_keeps_the_row_already_in_the_lake(lake: Lake) -> None:
    lake.ingest_and_publish()
    kept_uri = lake.rows()["img2"]["source_uri"]
    # "a/img2.jpg" sorts before "b/img2.png": a fresh build would pick it, the lake must not
    other = lake.write("a/img2.jpg", photo_variant(30, size=(40, 40)))
    report = lake.ingest()
    assert not report.committed
    assert (report.objects, report.inserted, report.updated) == (0, 0, 0)
    assert [(r.source_uri, r.image_id, r.stage) for r in report.rejected] == [
        (str(other), "img2", "duplicate")
    ]
    assert kept_uri in report.rejected[0].reason
    assert lake.rows()["img2"]["source_uri"] == kept_uri
    rejects = lake.rejects()
    assert len(rejects) == 1
    assert rejects[0]["source_uri"] == str(other) and rejects[0]["stage"] == "duplicate"
    assert rejects[0]["etag"] == f"{other.stat().st_mtime_ns}-{other.stat().st_size}"
    assert rejects[0]["size_bytes"] == other.stat().st_size


def test_duplicate_stem_on_a_fresh_build_keeps_the_first_in_key_order(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    lake = Lake(tmp_path, local_store)
    first = lake.write("a/same.jpg", photo_variant(1, size=(32, 32)))
    second = lake.write("b/same.png", photo_variant(2, size=(32, 32), fmt="PNG"))
    report = lake.ingest()
    assert report.inserted == 1 and report.objects == 1
    assert lake.rows()["same"]["source_uri"] == str(first)
    assert [(r.source_uri, r.stage) for r in report.rejected] == [(str(second), "duplicate")]


def test_known_bad_object_is_not_downloaded_again(lake: Lake) -> None:
    bad = BAD_IMAGE_CASES["caption.jpg"]
    bad_path = lake.write("caption.jpg", bad.data)
    first = lake.ingest_and_publish()
    assert first.objects == 4  # the bad one was downloaded once to find out
    assert [(r.image_id, r.stage) for r in first.rejected] == [("caption", "decode")]
    assert bad.problem in first.rejected[0].reason
    rejects_version = lance.dataset(lake.rejects_uri).version

    again = lake.ingest()
    assert not again.committed
    assert (again.objects, again.bytes) == (0, 0)
    assert again.rejected == first.rejected
    assert lake.rejects() == [r.__dict__ for r in first.rejected]
    assert lance.dataset(lake.rejects_uri).version == rejects_version  # nothing to rewrite

    fixed = photo_variant(40, size=(30, 30))
    lake.write("caption.jpg", fixed)
    assert bad_path.stat().st_size == len(fixed)
    repaired = lake.ingest()
    assert repaired.committed and repaired.inserted == 1 and repaired.objects == 1
    assert repaired.rejected == []
    assert lake.rejects() == []
    assert lake.rows()["caption"]["image_data"] == fixed


def test_object_that_turns_bad_keeps_its_last_good_row(lake: Lake) -> None:
    lake.ingest_and_publish()
    good = lake.rows()["img1"]
    lake.write("a/img1.jpg", BAD_IMAGE_CASES["truncated.jpg"].data)
    report = lake.ingest()
    assert not report.committed and report.objects == 1
    assert [(r.image_id, r.stage) for r in report.rejected] == [("img1", "decode")]
    assert lake.rows()["img1"] == good
    assert [r["image_id"] for r in lake.rejects()] == ["img1"]
    again = lake.ingest()  # same ETag: carried over, not downloaded again
    assert again.objects == 0 and [r.image_id for r in again.rejected] == ["img1"]


def test_published_table_with_an_older_schema_is_rebuilt(lake: Lake) -> None:
    old_schema = pa.schema([f for f in IMAGE_SCHEMA if f.name != "source_etag"])
    old = pa.Table.from_pylist(
        [
            {
                "image_id": "stale",
                "image_data": b"x",
                "source_uri": "/gone/stale.jpg",
                "sha256": sha256(b"x"),
                "size_bytes": 1,
                "format": "jpeg",
                "width": 1,
                "height": 1,
            }
        ],
        schema=old_schema,
    )
    ds = lance.write_dataset(old, lake.images_uri)
    publish.publish(lake.images_uri, ds.version)
    report = lake.ingest()
    assert report.full_rebuild and report.committed and report.objects == 3
    assert open_dataset(lake.images_uri).schema.equals(IMAGE_SCHEMA)
    assert set(lake.rows()) == {"img0", "img1", "img2"}


def test_listing_rejects_names_without_an_image_extension(lake: Lake) -> None:
    lake.write("notes.txt", b"hello")
    report = lake.ingest()
    assert report.objects == 3  # the .txt is rejected from its name, never downloaded
    assert [(r.image_id, r.stage, r.size_bytes) for r in report.rejected] == [
        ("notes", "listing", 5)
    ]


def test_full_rebuild_rewrites_everything(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    report = lake.ingest(full_rebuild=True)
    assert report.committed and report.full_rebuild
    assert report.base_version is None
    assert report.objects == 3 and report.inserted == 3
    # a rewrite commits twice: the rows, then the image_id index (a rewrite drops it)
    assert report.summary.version == first.summary.version + 2 == lake.latest_version()
    assert lake.rows() == lake.rows(first.summary.version)
    assert open_dataset(lake.images_uri).count_rows() == 3  # overwritten, not appended


def test_fail_mode_raises_on_a_bad_image_and_commits_nothing(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    bad = lake.write("z/broken.png", BAD_IMAGE_CASES["truncated.png"].data)
    with pytest.raises(InvalidImageError) as info:
        lake.ingest(on_bad_input="fail")
    assert info.value.source_uri == str(bad)
    assert str(bad) in str(info.value)
    assert lake.latest_version() == first.summary.version
    assert lake.rejects() == []


def test_fail_mode_raises_on_a_bad_image_among_good_new_ones(lake: Lake) -> None:
    """Good rows already streamed to Lance are not committed when a later object is bad."""
    first = lake.ingest_and_publish()
    for i in range(6):
        lake.write(f"c/new{i}.jpg", photo_variant(50 + i, size=(32, 32)))
    bad = lake.write("c/new9.jpg", BAD_IMAGE_CASES["empty.jpg"].data)
    with pytest.raises(InvalidImageError, match="new9.jpg"):
        lake.ingest(on_bad_input="fail", batch_rows=2)
    assert lake.latest_version() == first.summary.version
    assert set(lake.rows()) == {"img0", "img1", "img2"}
    assert bad.exists()


def test_fail_mode_raises_on_a_duplicate_stem_and_commits_nothing(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    kept = lake.rows()["img0"]["source_uri"]
    lake.write("c/img0.png", photo_variant(60, size=(32, 32), fmt="PNG"))
    with pytest.raises(DuplicateKeyError) as info:
        lake.ingest(on_bad_input="fail")
    assert kept in str(info.value) and "'img0'" in str(info.value)
    assert lake.latest_version() == first.summary.version


def test_duplicate_key_error_names_the_rejected_object(lake: Lake) -> None:
    lake.ingest_and_publish()
    other = lake.write("c/img0.png", photo_variant(60, size=(32, 32), fmt="PNG"))
    with pytest.raises(DuplicateKeyError) as info:
        lake.ingest(on_bad_input="fail")
    assert str(other) in str(info.value)


def test_fail_mode_raises_on_a_known_bad_object_carried_over(lake: Lake) -> None:
    bad = lake.write("caption.jpg", BAD_IMAGE_CASES["caption.jpg"].data)
    first = lake.ingest_and_publish()  # quarantined, remembered with its ETag
    assert [r.source_uri for r in first.rejected] == [str(bad)]
    with pytest.raises(InvalidImageError, match="caption.jpg"):
        lake.ingest(on_bad_input="fail")


def test_fail_mode_on_a_first_run_creates_no_dataset(tmp_path: Path, local_store) -> None:
    lake = Lake(tmp_path, local_store)
    lake.write("a.jpg", photo_variant(1, size=(32, 32)))
    lake.write("b.jpg", BAD_IMAGE_CASES["caption.jpg"].data)
    with pytest.raises(InvalidImageError, match="b.jpg"):
        lake.ingest(on_bad_input="fail")
    with pytest.raises(DatasetNotFoundError):
        open_dataset(lake.images_uri)


def test_failed_candidate_is_discarded_before_the_next_merge(lake: Lake) -> None:
    first = lake.ingest_and_publish()
    published_rows = lake.rows()
    # a candidate whose checks failed: a duplicate image_id with garbage bytes, never published
    junk = pa.Table.from_pylist(
        [
            {
                "image_id": "img0",
                "image_data": b"junk",
                "source_uri": "/nowhere/img0.jpg",
                "source_etag": "x",
                "sha256": sha256(b"junk"),
                "size_bytes": 4,
                "format": "jpeg",
                "width": 1,
                "height": 1,
            }
        ],
        schema=IMAGE_SCHEMA,
    )
    lance.write_dataset(junk, lake.images_uri, mode="append")
    assert lake.latest_version() == first.summary.version + 1

    new = photo_variant(70, size=(36, 36))
    lake.write("c/fresh.jpg", new)
    report = lake.ingest()
    assert report.base_version == first.summary.version
    assert (report.inserted, report.updated, report.objects) == (1, 0, 1)
    rows = lake.rows()  # asserts image_id is unique: the junk row is gone
    assert set(rows) == {*published_rows, "fresh"}
    for image_id, row in published_rows.items():
        assert rows[image_id] == row
    assert rows["fresh"]["image_data"] == new
    # history is kept: the rejected candidate is still readable by version
    assert open_dataset(lake.images_uri, None, first.summary.version + 1).count_rows() == 4


def test_unpublished_first_run_is_rebuilt(lake: Lake) -> None:
    """With nothing published there is no base: the next run rebuilds from the listing."""
    first = lake.ingest()
    again = lake.ingest()
    assert again.committed and again.full_rebuild and again.base_version is None
    assert again.objects == 3
    # a rewrite commits twice: the rows, then the image_id index (a rewrite drops it)
    assert again.summary.version == first.summary.version + 2 == lake.latest_version()
    assert len(lake.rows()) == 3


def test_s3_modified_object_is_updated(s3_store: ObjectStore, bucket: str) -> None:
    client = s3_store.client
    originals = {f"raw/img{i}.jpg": photo_variant(80 + i, size=(40, 32)) for i in range(3)}
    for key, data in originals.items():
        put(client, bucket, key, data)
    images_uri = f"s3://{bucket}/lake/images.lance"
    rejects_uri = f"s3://{bucket}/lake/rejected_images.lance"

    def run() -> IngestReport:
        return ingest_images(
            s3_store,
            f"s3://{bucket}/raw/",
            images_uri,
            ImageIngestOptions(workers=2),
            rejects_uri=rejects_uri,
        )

    storage = s3_store.storage_options(images_uri)
    first = run()
    assert first.inserted == 3 and first.objects == 3
    publish.publish(images_uri, first.summary.version, storage)
    rows = {r["image_id"]: r for r in open_dataset(images_uri, storage).to_table().to_pylist()}
    # moto's ETag for a single-part upload is the MD5 of the bytes
    assert rows["img1"]["source_etag"] == hashlib.md5(originals["raw/img1.jpg"]).hexdigest()  # noqa: S324

    unchanged = run()
    assert not unchanged.committed and unchanged.objects == 0

    new = photo_variant(99, size=(56, 44))
    put(client, bucket, "raw/img1.jpg", new)
    report = run()
    assert report.committed and not report.full_rebuild
    assert (report.inserted, report.updated, report.unchanged, report.objects) == (0, 1, 2, 1)
    assert report.bytes == len(new)
    after = {r["image_id"]: r for r in open_dataset(images_uri, storage).to_table().to_pylist()}
    assert after["img1"]["image_data"] == new
    assert after["img1"]["sha256"] == sha256(new)
    assert after["img1"]["source_etag"] == hashlib.md5(new).hexdigest()  # noqa: S324
    assert (after["img1"]["width"], after["img1"]["height"]) == (56, 44)
    assert after["img0"] == rows["img0"] and after["img2"] == rows["img2"]
    assert read_rejected_images(rejects_uri, s3_store.storage_options(rejects_uri)) == []
