"""Image ingest: raw objects (local folder or S3) -> images.lance, bytes kept exactly."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lance
import pytest
from helpers import photo_variant, put, sample_image_bytes, sha256
from PIL import Image

from vlm_lake.errors import DuplicateKeyError, InvalidImageError, SourceNotFoundError
from vlm_lake.ingest.image_fetch import iter_image_batches
from vlm_lake.ingest.image_plan import plan_image_ingest
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.util.progress import Progress

#: Versions a full rewrite commits: the rows, then the image_id index a rewrite drops
#: (``lance_layout.maintain``). Both are complete tables; the report names the latest.
REWRITE_VERSIONS = 2


def _images() -> dict[str, tuple[str, bytes]]:
    """Relative key -> (expected format, bytes)."""
    return {
        "image1.jpg": ("jpeg", sample_image_bytes("image1.jpg")),
        "image4.png": ("png", sample_image_bytes("image4.png")),
        "nested/v10.jpg": ("jpeg", photo_variant(10)),
        "nested/deeper/v11.PNG": ("png", photo_variant(11, size=(64, 48), fmt="PNG")),
        "z/v12.jpeg": ("jpeg", photo_variant(12, size=(90, 70))),
    }


_NOT_IMAGES = {"notes.txt": b"not an image", "nested/meta.json": b"{}", "z/raw.bin": b"\x00" * 9}


def _write_local(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _size(data: bytes) -> tuple[int, int]:
    import io

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def _check_rows(rows: list[dict], images: dict[str, tuple[str, bytes]], uri_of) -> None:
    assert len(rows) == len(images)
    by_id = {r["image_id"]: r for r in rows}
    assert len(by_id) == len(rows)
    for rel, (fmt, data) in images.items():
        stem = Path(rel).stem
        row = by_id[stem]
        assert row["image_data"] == data
        assert sha256(row["image_data"]) == sha256(data) == row["sha256"]
        assert row["size_bytes"] == len(data)
        assert row["format"] == fmt
        assert (row["width"], row["height"]) == _size(data)
        assert row["source_uri"] == uri_of(rel)


def test_ingest_local_folder(tmp_path: Path, local_store: ObjectStore) -> None:
    images = _images()
    raw = tmp_path / "raw"
    _write_local(raw, {k: v for k, (_, v) in images.items()} | _NOT_IMAGES)
    out = str(tmp_path / "lake" / "images.lance")
    report = ingest_images(local_store, str(raw), out, ImageIngestOptions(workers=3))

    assert report.objects == len(images)
    assert report.bytes == sum(len(v) for _, v in images.values())
    assert report.summary.num_rows == len(images)
    assert report.summary.version == REWRITE_VERSIONS
    assert report.summary.uri == out
    ds = lance.dataset(out)
    assert ds.schema == IMAGE_SCHEMA
    rows = ds.to_table().to_pylist()
    _check_rows(rows, images, lambda rel: str(raw / rel))
    assert {r["image_id"] for r in rows} == {"image1", "image4", "v10", "v11", "v12"}


def test_ingest_single_local_file(tmp_path: Path, local_store: ObjectStore) -> None:
    data = sample_image_bytes("image2.jpg")
    (tmp_path / "only.jpg").write_bytes(data)
    report = ingest_images(local_store, str(tmp_path / "only.jpg"), str(tmp_path / "i.lance"))
    rows = lance.dataset(str(tmp_path / "i.lance")).to_table().to_pylist()
    assert report.summary.num_rows == 1
    assert rows[0]["image_id"] == "only"
    assert rows[0]["image_data"] == data


def test_ingest_from_s3_to_s3(s3_store: ObjectStore, bucket: str) -> None:
    images = _images()
    for rel, (_, data) in images.items():
        put(s3_store.client, bucket, f"raw/images/{rel}", data)
    for rel, data in _NOT_IMAGES.items():
        put(s3_store.client, bucket, f"raw/images/{rel}", data)
    put(s3_store.client, bucket, "raw/imagesX/other.jpg", photo_variant(99))  # sibling prefix
    out = f"s3://{bucket}/lake/images.lance"
    report = ingest_images(
        s3_store, f"oss://{bucket}/raw/images", out, ImageIngestOptions(workers=4)
    )
    assert report.summary.num_rows == len(images)
    ds = lance.dataset(out, storage_options=s3_store.storage_options(out))
    rows = ds.to_table().to_pylist()
    _check_rows(rows, images, lambda rel: f"s3://{bucket}/raw/images/{rel}")
    # Rows follow the key order of the listing.
    assert [r["source_uri"] for r in rows] == sorted(r["source_uri"] for r in rows)
    # The dataset really lives in the bucket.
    keys = [i.key for i in s3_store.list(f"s3://{bucket}/lake/images.lance")]
    assert any(k.endswith(".lance") and "/data/" in k for k in keys)


def test_ingest_from_s3_to_local(s3_store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    data = {f"image{i}": sample_image_bytes(f"image{i}.jpg") for i in (1, 2, 3)}
    for stem, b in data.items():
        put(s3_store.client, bucket, f"lanceData/{stem}.jpg", b)
    out = str(tmp_path / "images.lance")
    ingest_images(s3_store, f"s3://{bucket}/lanceData/", out)
    rows = lance.dataset(out).to_table().to_pylist()
    assert [r["image_id"] for r in rows] == ["image1", "image2", "image3"]
    assert [r["image_data"] for r in rows] == list(data.values())


def _ingest_good_then(
    tmp_path: Path, store: ObjectStore, extra: dict[str, bytes]
) -> tuple[Path, str]:
    raw = tmp_path / "raw"
    _write_local(raw, {"a.jpg": photo_variant(1), "b.png": photo_variant(2, fmt="PNG")})
    out = str(tmp_path / "images.lance")
    assert ingest_images(store, str(raw), out).summary.version == REWRITE_VERSIONS
    _write_local(raw, extra)
    return raw, out


def _assert_still_first_version(out: str) -> None:
    ds = lance.dataset(out)
    assert ds.version == REWRITE_VERSIONS
    assert ds.latest_version == REWRITE_VERSIONS
    rows = ds.to_table().to_pylist()
    assert [r["image_id"] for r in rows] == ["a", "b"]
    assert rows[0]["image_data"] == photo_variant(1)


def test_bad_image_fails_and_keeps_previous_version(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    raw, out = _ingest_good_then(tmp_path, local_store, {"sub/bad.jpg": b"this is no jpeg"})
    bad_uri = str(raw / "sub" / "bad.jpg")
    with pytest.raises(InvalidImageError, match=re.escape(repr(bad_uri))) as info:
        ingest_images(
            local_store, str(raw), out, ImageIngestOptions(workers=2, on_bad_input="fail")
        )
    assert "not a decodable image" in str(info.value)
    assert info.value.source_uri == bad_uri
    _assert_still_first_version(out)


def test_bad_image_on_s3_names_object_and_keeps_previous(
    s3_store: ObjectStore, bucket: str
) -> None:
    put(s3_store.client, bucket, "img/a.jpg", photo_variant(5))
    out = f"s3://{bucket}/lake/images.lance"
    ingest_images(s3_store, f"s3://{bucket}/img", out)
    jpeg = sample_image_bytes("image1.jpg")
    put(s3_store.client, bucket, "img/bad.jpg", jpeg[: len(jpeg) // 2])
    with pytest.raises(InvalidImageError, match="truncated") as info:
        ingest_images(s3_store, f"s3://{bucket}/img", out, ImageIngestOptions(on_bad_input="fail"))
    assert info.value.source_uri == f"s3://{bucket}/img/bad.jpg"
    assert f"'s3://{bucket}/img/bad.jpg'" in str(info.value)
    ds = lance.dataset(out, storage_options=s3_store.storage_options(out))
    assert ds.latest_version == REWRITE_VERSIONS
    assert ds.to_table().column("image_data").to_pylist() == [photo_variant(5)]


def test_duplicate_stems_fail(tmp_path: Path, local_store: ObjectStore) -> None:
    raw, out = _ingest_good_then(
        tmp_path, local_store, {"x/dup.jpg": photo_variant(3), "y/dup.png": photo_variant(4)}
    )
    pattern = "image_id 'dup' of .* is also the file stem of"
    with pytest.raises(DuplicateKeyError, match=pattern) as e:
        ingest_images(local_store, str(raw), out, ImageIngestOptions(on_bad_input="fail"))
    assert str(raw / "x" / "dup.jpg") in str(e.value)
    assert str(raw / "y" / "dup.png") in str(e.value)
    _assert_still_first_version(out)


def test_empty_prefix_fails_and_writes_nothing(s3_store: ObjectStore, bucket: str) -> None:
    put(s3_store.client, bucket, "raw/notes.txt", b"no images here")
    out = f"s3://{bucket}/lake/images.lance"
    for src in (f"s3://{bucket}/empty/", f"s3://{bucket}/raw"):
        with pytest.raises(SourceNotFoundError, match="no objects under|none of the 1 objects"):
            ingest_images(s3_store, src, out)
    assert list(s3_store.list(f"s3://{bucket}/lake")) == []


def test_empty_local_folder_fails(tmp_path: Path, local_store: ObjectStore) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.json").write_text("[]")
    for src in ("empty", "missing", "texts"):
        with pytest.raises(SourceNotFoundError, match=re.escape(repr(str(tmp_path / src)))):
            ingest_images(local_store, str(tmp_path / src), str(tmp_path / "i.lance"))
    assert not (tmp_path / "i.lance").exists()


def test_strict_plan_raises_documented_errors(tmp_path: Path, local_store: ObjectStore) -> None:
    _write_local(tmp_path / "dup", {"a/x.jpg": photo_variant(1), "b/x.jpg": photo_variant(2)})
    with pytest.raises(DuplicateKeyError, match="'x'"):
        plan_image_ingest(local_store, str(tmp_path / "dup"), {}, [], strict=True)
    _write_local(tmp_path / "txt", {"ok.jpg": photo_variant(1), "notes.txt": b"hello"})
    with pytest.raises(InvalidImageError, match="image extension") as info:
        plan_image_ingest(local_store, str(tmp_path / "txt"), {}, [], strict=True)
    assert info.value.source_uri == str(tmp_path / "txt" / "notes.txt")
    _write_local(tmp_path / "bad", {"ok.jpg": photo_variant(1), "bad.jpg": b""})
    opts = ImageIngestOptions(workers=2, on_bad_input="fail")
    progress = Progress(logging.getLogger("test"), "images")
    to_fetch = list(local_store.list(str(tmp_path / "bad")))
    with pytest.raises(InvalidImageError) as info:
        list(iter_image_batches(local_store, to_fetch, opts, progress, [], []))
    assert info.value.source_uri == str(tmp_path / "bad" / "bad.jpg")


def test_small_batches_and_files(tmp_path: Path, local_store: ObjectStore) -> None:
    raw = tmp_path / "raw"
    originals = {f"img{i}": photo_variant(20 + i, size=(48, 32)) for i in range(5)}
    _write_local(raw, {f"{k}.jpg": v for k, v in originals.items()})
    opts = ImageIngestOptions(workers=2, batch_rows=2, max_rows_per_file=2)

    progress = Progress(logging.getLogger("test"), "images")
    to_fetch = list(local_store.list(str(raw)))
    batches = list(iter_image_batches(local_store, to_fetch, opts, progress, [], []))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert all(b.num_rows <= 2 and b.schema == IMAGE_SCHEMA for b in batches)
    assert progress.count == 5
    assert progress.nbytes == sum(len(v) for v in originals.values())

    out = str(tmp_path / "images.lance")
    report = ingest_images(local_store, str(raw), out, opts)
    ds = lance.dataset(out)
    assert ds.count_rows() == 5 == report.summary.num_rows
    assert len(ds.get_fragments()) >= 3
    assert report.summary.num_fragments == len(ds.get_fragments())
    assert all(f.count_rows() <= 2 for f in ds.get_fragments())
    rows = ds.to_table().to_pylist()
    assert {r["image_id"]: r["image_data"] for r in rows} == originals


def test_batch_bytes_bounds_batches(tmp_path: Path, local_store: ObjectStore) -> None:
    raw = tmp_path / "raw"
    originals = [photo_variant(i) for i in range(4)]
    _write_local(raw, {f"p{i}.jpg": d for i, d in enumerate(originals)})
    opts = ImageIngestOptions(workers=2, batch_rows=100, batch_bytes=1)
    progress = Progress(logging.getLogger("test"), "images")
    to_fetch = list(local_store.list(str(raw)))
    batches = list(iter_image_batches(local_store, to_fetch, opts, progress, [], []))
    assert [b.num_rows for b in batches] == [1, 1, 1, 1]
    assert [b.column("image_data")[0].as_py() for b in batches] == originals


def test_reingest_overwrites_with_new_version(tmp_path: Path, local_store: ObjectStore) -> None:
    raw = tmp_path / "raw"
    _write_local(raw, {"a.jpg": photo_variant(1)})
    out = str(tmp_path / "images.lance")
    first = ingest_images(local_store, str(raw), out)
    _write_local(raw, {"b.jpg": photo_variant(2)})
    report = ingest_images(local_store, str(raw), out)
    assert report.summary.version == first.summary.version + REWRITE_VERSIONS
    ds = lance.dataset(out)
    assert sorted(ds.to_table().column("image_id").to_pylist()) == ["a", "b"]
    assert lance.dataset(out, version=first.summary.version).count_rows() == 1


def test_non_image_objects_are_quarantined_with_a_reason(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_variant(1))
    for i in range(7):
        (folder / f"notes{i}.txt").write_text("not an image")
    rejects = str(tmp_path / "rejected_images.lance")
    with caplog.at_level(logging.WARNING, logger="vlm_lake.ingest.quarantine"):
        report = ingest_images(
            ObjectStore(), str(folder), str(tmp_path / "images.lance"), rejects_uri=rejects
        )
    assert report.summary.num_rows == 1
    assert [(r.image_id, r.stage) for r in report.rejected] == [
        (f"notes{i}", "listing") for i in range(7)
    ]
    assert all("does not end in an image extension" in r.reason for r in report.rejected)
    table = lance.dataset(rejects).to_table().to_pylist()
    assert [r["source_uri"] for r in table] == [str(folder / f"notes{i}.txt") for i in range(7)]
    assert any("7 input(s) quarantined" in r.getMessage() for r in caplog.records)
