"""URIs, store settings and the object store, on local folders and on a real S3 server."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import put, sha256

from vlm_lake.store import uris
from vlm_lake.store.multipart import PART_SIZE
from vlm_lake.store.object_store import ObjectStore, StoreSettings

# -- uris ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.jpg", "s3://bucket/a/b.jpg"),
        ("oss://bucket/a/b.jpg", "s3://bucket/a/b.jpg"),
        ("s3a://bucket/a/b.jpg", "s3://bucket/a/b.jpg"),
        ("oss://bucket/prefix/", "s3://bucket/prefix"),
        ("s3a://bucket", "s3://bucket"),
        ("s3://bucket/", "s3://bucket"),
        ("S3://bucket/key", "s3://bucket/key"),
    ],
)
def test_normalize_object_store_uris(uri: str, expected: str) -> None:
    assert uris.normalize(uri) == expected
    assert uris.is_remote(uri)


def test_normalize_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert uris.normalize("lake/images.lance") == str(tmp_path / "lake" / "images.lance")
    assert uris.normalize(f"file://{tmp_path}/x.json") == str(tmp_path / "x.json")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert uris.normalize("~/data") == str(tmp_path / "home" / "data")
    assert not uris.is_remote(str(tmp_path))


def test_join_remote_and_local(tmp_path: Path) -> None:
    assert uris.join("oss://bucket/lake/", "images.lance") == "s3://bucket/lake/images.lance"
    assert uris.join("s3a://bucket/lake", "/sub/", "x.json") == "s3://bucket/lake/sub/x.json"
    assert uris.join("s3://bucket", "x") == "s3://bucket/x"
    assert uris.join(str(tmp_path), "a", "b.lance") == os.path.join(str(tmp_path), "a", "b.lance")


def test_stem_and_suffix() -> None:
    assert uris.stem("a/b/image1.jpg") == "image1"
    assert uris.stem("image1") == "image1"
    assert uris.stem("/abs/path/photo.final.PNG") == "photo.final"
    assert uris.suffix("a/b/IMAGE.JPG") == ".jpg"
    assert uris.suffix("a/b/noext") == ""


def test_split_bucket_key() -> None:
    assert uris.split_bucket_key("s3://bucket/some/key.jpg") == ("bucket", "some/key.jpg")
    assert uris.split_bucket_key("oss://bucket/some/") == ("bucket", "some/")
    assert uris.split_bucket_key("s3a://bucket") == ("bucket", "")


@pytest.mark.parametrize(
    "bad",
    ["/local/path/x.jpg", "http://host/bucket/key", "s3:///no-bucket/key", "s3://", "gs://b/k"],
)
def test_split_bucket_key_rejects_non_object_store_uris(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an object store URI") as info:
        uris.split_bucket_key(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", ["s3:///key", "oss://", "s3a:///a/b"])
def test_normalize_rejects_uri_without_bucket(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        uris.normalize(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("uri", ["s3://bucket/dir/img#1.jpg", "s3://bucket/dir/a?b.jpg"])
def test_normalize_keeps_hash_and_question_mark_in_keys(uri: str) -> None:
    assert uris.normalize(uri) == uri


# -- StoreSettings -----------------------------------------------------------------------


def test_storage_options_http_endpoint() -> None:
    settings = StoreSettings(
        endpoint_url="http://127.0.0.1:9000/",
        region="us-east-1",
        access_key_id="AKID",
        secret_access_key="SECRET",
        session_token="TOKEN",
        max_attempts=3,
        connect_timeout=5.5,
        read_timeout=30,
    )
    opts = settings.lance_storage_options("s3://bucket/x.lance")
    assert opts == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": "AKID",
        "aws_secret_access_key": "SECRET",
        "aws_session_token": "TOKEN",
        "virtual_hosted_style_request": "false",
        "client_max_retries": "2",  # retries after the first attempt: 3 attempts in all
        "download_retry_count": "2",
        "connect_timeout": "5500ms",
        "timeout": "30s",
    }


def test_storage_options_https_endpoint_has_no_allow_http() -> None:
    opts = StoreSettings(endpoint_url="https://minio.example.com").lance_storage_options(
        "s3://bucket/x.lance"
    )
    assert opts["aws_endpoint"] == "https://minio.example.com"
    assert "allow_http" not in opts
    assert "aws_access_key_id" not in opts
    assert "aws_secret_access_key" not in opts


def test_storage_options_virtual_hosted_style_puts_bucket_in_endpoint() -> None:
    settings = StoreSettings(
        endpoint_url="https://oss-cn-hangzhou.aliyuncs.com",
        region="cn-hangzhou",
        virtual_hosted_style=True,
    )
    opts = settings.lance_storage_options("s3://mybucket/x.lance")
    assert opts["aws_endpoint"] == "https://mybucket.oss-cn-hangzhou.aliyuncs.com"
    assert opts["virtual_hosted_style_request"] == "true"
    assert opts["aws_region"] == "cn-hangzhou"
    assert "allow_http" not in opts
    # Through the store, oss:// is normalized first and gives the same endpoint.
    via_store = ObjectStore(settings).storage_options("oss://mybucket/x.lance")
    assert via_store["aws_endpoint"] == "https://mybucket.oss-cn-hangzhou.aliyuncs.com"
    # An endpoint that already names the bucket is kept as is.
    already = StoreSettings(
        endpoint_url="https://mybucket.oss-cn-hangzhou.aliyuncs.com", virtual_hosted_style=True
    ).lance_storage_options("s3://mybucket/x.lance")
    assert already["aws_endpoint"] == "https://mybucket.oss-cn-hangzhou.aliyuncs.com"


def test_storage_options_local_paths_are_empty(tmp_path: Path) -> None:
    settings = StoreSettings(endpoint_url="http://127.0.0.1:9000", access_key_id="AKID")
    assert settings.lance_storage_options(str(tmp_path / "x.lance")) == {}
    assert ObjectStore(settings).storage_options(str(tmp_path / "x.lance")) == {}
    assert ObjectStore(settings).storage_options(f"file://{tmp_path}/x.lance") == {}


def test_repr_never_contains_secrets() -> None:
    settings = StoreSettings(
        endpoint_url="http://127.0.0.1:9000",
        access_key_id="AKID-visible",
        secret_access_key="super-secret-value-123",
        session_token="session-token-value-456",
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "super-secret-value-123" not in text
        assert "session-token-value-456" not in text
        assert "AKID-visible" in text


def test_s3_settings_fixture_repr_hides_secret(s3_settings: StoreSettings) -> None:
    assert s3_settings.secret_access_key
    assert s3_settings.secret_access_key not in repr(s3_settings)


# -- ObjectStore: local folders ---------------------------------------------------------


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.jpg": b"A",
        "b.json": b'{"b": 1}',
        "sub/c.JPG": b"CC",
        "sub/deeper/d.png": b"DDD",
        "sub/deeper/e.txt": b"EEEE",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_local_list_single_file(tmp_path: Path, local_store: ObjectStore) -> None:
    _make_tree(tmp_path)
    found = list(local_store.list(str(tmp_path / "sub" / "c.JPG")))
    assert len(found) == 1
    info = found[0]
    assert info.uri == str(tmp_path / "sub" / "c.JPG")
    assert info.key == info.uri
    assert info.size == 2
    st = (tmp_path / "sub" / "c.JPG").stat()
    assert info.etag == f"{st.st_mtime_ns}-{st.st_size}"


def test_local_list_prefix_nested_and_suffix_filter(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    files = _make_tree(tmp_path)
    found = list(local_store.list(str(tmp_path)))
    assert {Path(i.uri).relative_to(tmp_path).as_posix() for i in found} == set(files)
    assert {Path(i.uri).relative_to(tmp_path).as_posix(): i.size for i in found} == {
        k: len(v) for k, v in files.items()
    }
    images = list(local_store.list(str(tmp_path), suffixes=(".jpg", ".png")))
    assert sorted(Path(i.uri).relative_to(tmp_path).as_posix() for i in images) == [
        "a.jpg",
        "sub/c.JPG",
        "sub/deeper/d.png",
    ]
    assert list(local_store.list(str(tmp_path / "missing"))) == []
    assert list(local_store.list(str(tmp_path), suffixes=(".webp",))) == []


def test_local_list_sorted_within_each_folder(tmp_path: Path, local_store: ObjectStore) -> None:
    for name in ("c.bin", "a.bin", "b.bin"):
        (tmp_path / "flat" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "flat" / name).write_bytes(b"x")
    keys = [Path(i.key).name for i in local_store.list(str(tmp_path / "flat"))]
    assert keys == ["a.bin", "b.bin", "c.bin"]


def test_local_list_is_in_key_order_like_s3(tmp_path: Path, local_store: ObjectStore) -> None:
    for rel in ("b.txt", "a/x.txt", "a-b/x.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    keys = [i.key for i in local_store.list(str(tmp_path))]
    assert keys == sorted(keys)


def test_local_read_exists_write(tmp_path: Path, local_store: ObjectStore) -> None:
    target = tmp_path / "new" / "dir" / "obj.bin"
    assert not local_store.exists(str(target))
    local_store.write_bytes(str(target), b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    assert local_store.exists(str(target))
    assert not local_store.exists(str(tmp_path / "new"))  # a folder is not an object
    assert local_store.read_bytes(str(target)) == b"\x00\x01payload"
    assert local_store.read_bytes(f"file://{target}") == b"\x00\x01payload"
    local_store.write_bytes(str(target), b"second")
    assert local_store.read_bytes(str(target)) == b"second"
    assert sorted(os.listdir(target.parent)) == ["obj.bin"]


def test_local_atomic_writer_failure_keeps_previous_and_no_temp_files(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    target = tmp_path / "out.json"
    local_store.write_bytes(str(target), b"previous content")
    with pytest.raises(RuntimeError, match="boom inside writer"):
        with local_store.open_atomic_writer(str(target)) as out:
            out.write(b"partial new content " * 1000)
            raise RuntimeError("boom inside writer")
    assert target.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_local_atomic_writer_failure_on_new_file_leaves_nothing(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    target = tmp_path / "fresh" / "out.json"
    with pytest.raises(KeyError):
        with local_store.open_atomic_writer(str(target)) as out:
            out.write(b"data")
            raise KeyError("x")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_local_atomic_writer_streams_many_chunks(tmp_path: Path, local_store: ObjectStore) -> None:
    target = tmp_path / "big.bin"
    chunks = [bytes([i % 256]) * 4096 for i in range(300)]
    with local_store.open_atomic_writer(str(target)) as out:
        for chunk in chunks:
            out.write(chunk)
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_bytes() == b"".join(chunks)


def test_local_atomic_writer_respects_umask(tmp_path: Path, local_store: ObjectStore) -> None:
    old = os.umask(0o022)
    try:
        local_store.write_bytes(str(tmp_path / "f.json"), b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


# -- ObjectStore: S3 (moto server) ------------------------------------------------------


def _upload_tree(store: ObjectStore, bucket: str) -> dict[str, bytes]:
    files = {
        "data/a.jpg": b"A",
        "data/b.json": b'{"b": 1}',
        "data/sub/c.JPG": b"CC",
        "data/sub/deeper/d.png": b"DDD",
        "data/sub/deeper/e.txt": b"EEEE",
        "data2/not-under-data.jpg": b"X",
        "datafile.jpg": b"Y",
    }
    for key, data in files.items():
        put(store.client, bucket, key, data)
    put(store.client, bucket, "data/emptydir/", b"")  # a folder marker, not an object
    return files


def test_s3_list_single_object(s3_store: ObjectStore, bucket: str) -> None:
    _upload_tree(s3_store, bucket)
    for uri in (f"s3://{bucket}/data/sub/c.JPG", f"oss://{bucket}/data/sub/c.JPG"):
        found = list(s3_store.list(uri))
        assert len(found) == 1
        assert found[0].uri == f"s3://{bucket}/data/sub/c.JPG"
        assert found[0].key == "data/sub/c.JPG"
        assert found[0].size == 2
        assert found[0].etag and '"' not in found[0].etag


def test_s3_list_prefix_sorted_nested(s3_store: ObjectStore, bucket: str) -> None:
    files = _upload_tree(s3_store, bucket)
    under_data = sorted(k for k in files if k.startswith("data/"))
    for uri in (f"s3://{bucket}/data", f"s3://{bucket}/data/", f"s3a://{bucket}/data"):
        found = list(s3_store.list(uri))
        assert [i.key for i in found] == under_data
        assert [i.uri for i in found] == [f"s3://{bucket}/{k}" for k in under_data]
        assert [i.size for i in found] == [len(files[k]) for k in under_data]
    whole = [i.key for i in s3_store.list(f"s3://{bucket}")]
    assert whole == sorted(files)
    assert list(s3_store.list(f"s3://{bucket}/nothing-here")) == []


def test_s3_list_suffix_filter(s3_store: ObjectStore, bucket: str) -> None:
    _upload_tree(s3_store, bucket)
    found = list(s3_store.list(f"s3://{bucket}/data", suffixes=(".jpg", ".png")))
    assert [i.key for i in found] == ["data/a.jpg", "data/sub/c.JPG", "data/sub/deeper/d.png"]
    assert list(s3_store.list(f"s3://{bucket}/data/a.jpg", suffixes=(".png",))) == []


def test_s3_list_paginates_past_1000_objects(s3_store: ObjectStore, bucket: str) -> None:
    keys = [f"many/{i:05d}.bin" for i in range(1001)]
    client = s3_store.client
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: put(client, bucket, k, k.encode()), keys))
    put(client, bucket, "other/outside.bin", b"x")
    found = list(s3_store.list(f"s3://{bucket}/many"))
    assert len(found) == 1001
    assert [i.key for i in found] == keys
    assert all(i.size == len(i.key) for i in found)
    assert len(list(s3_store.list(f"s3://{bucket}/many", suffixes=(".txt",)))) == 0


def test_s3_read_exists_write(s3_store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/dir/obj.bin"
    assert not s3_store.exists(uri)
    s3_store.write_bytes(uri, b"\x00payload\xff")
    assert s3_store.exists(uri)
    assert s3_store.exists(f"oss://{bucket}/dir/obj.bin")
    assert not s3_store.exists(f"s3://{bucket}/dir")  # a prefix is not an object
    assert s3_store.read_bytes(uri) == b"\x00payload\xff"
    body = s3_store.client.get_object(Bucket=bucket, Key="dir/obj.bin")["Body"].read()
    assert body == b"\x00payload\xff"
    s3_store.write_bytes(uri, b"")
    assert s3_store.read_bytes(uri) == b""


def test_s3_atomic_writer_multipart_roundtrip(s3_store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/big/stream.bin"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    total = b""
    with s3_store.open_atomic_writer(uri) as out:
        for i in range(17):
            piece = bytes([i]) + chunk[1:]
            out.write(piece)
            total += piece
        out.write(b"tail-bytes")
        total += b"tail-bytes"
        assert not s3_store.exists(uri)  # not visible until completed
    assert len(total) > PART_SIZE * 2
    assert s3_store.read_bytes(uri) == total
    head = s3_store.client.head_object(Bucket=bucket, Key="big/stream.bin")
    assert head["ContentLength"] == len(total)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 MiB, 8 MiB, rest
    assert sha256(s3_store.read_bytes(uri)) == sha256(total)


def test_s3_atomic_writer_failure_keeps_previous(s3_store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/out/training.json"
    s3_store.write_bytes(uri, b"previous version")
    # Failure after a multipart upload started (more than one part written).
    with pytest.raises(RuntimeError, match="fail after parts"):
        with s3_store.open_atomic_writer(uri) as out:
            out.write(b"n" * (PART_SIZE + 1024))
            raise RuntimeError("fail after parts")
    assert s3_store.read_bytes(uri) == b"previous version"
    uploads = s3_store.client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []  # the upload was aborted
    # Failure before any part was uploaded.
    with pytest.raises(ValueError, match="small failure"):
        with s3_store.open_atomic_writer(uri) as out:
            out.write(b"small")
            raise ValueError("small failure")
    assert s3_store.read_bytes(uri) == b"previous version"
    assert [i.key for i in s3_store.list(f"s3://{bucket}/out")] == ["out/training.json"]


def test_s3_atomic_writer_failure_on_new_key_creates_nothing(
    s3_store: ObjectStore, bucket: str
) -> None:
    uri = f"s3://{bucket}/fresh/x.bin"
    with pytest.raises(RuntimeError):
        with s3_store.open_atomic_writer(uri) as out:
            out.write(b"z" * (PART_SIZE + 10))
            raise RuntimeError("no")
    assert not s3_store.exists(uri)
    assert list(s3_store.list(f"s3://{bucket}")) == []
