"""Training from S3: the loader reads through a bounded local fragment cache, same samples."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
import torch
from helpers import photo_variant, recorded_s3_requests, write_published
from torch.utils.data import DataLoader

from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.dataset import VLMDataset
from vlm_lake.training.fragment_cache import FragmentCache

DOCS = 24
ROWS_PER_FILE = 4  # 6 fragments
DELETED = ("doc05", "doc14")  # deletion files in two fragments
SIZE = 32


def _table() -> pa.Table:
    rows: list[dict[str, Any]] = []
    for i in range(DOCS):
        row: dict[str, Any] = {"docid": f"doc{i:02d}", "text": f"document {i}"}
        for slot in (1, 2):
            present = (i + slot) % 3 != 0
            row[f"image_id{slot}"] = f"img{i}-{slot}" if present else None
            row[f"image{slot}"] = photo_variant(2 * i + slot) if present else None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=multimodal_schema(2))


def _write(uri: str, options: dict[str, str]) -> None:
    write_published(_table(), uri, max_rows_per_file=ROWS_PER_FILE, storage_options=options)
    ds = lance.dataset(uri, storage_options=options)
    ds.delete(f"docid IN {DELETED}")
    publish.publish(uri, lance.dataset(uri, storage_options=options).version, options)


@pytest.fixture()
def lakes(tmp_path: Path, s3_store: ObjectStore, bucket: str) -> tuple[str, str, dict[str, str]]:
    """The same table, with the same deletions, on local disk and on the S3 server."""
    local = str(tmp_path / "multimodal.lance")
    remote = f"s3://{bucket}/lake/multimodal.lance"
    options = s3_store.storage_options(remote)
    _write(local, {})
    _write(remote, options)
    return local, remote, options


def _fragment_bytes(cache: FragmentCache, indices: list[int]) -> int:
    """Bytes of the files of the fragments holding ``indices`` (what one batch needs)."""
    fragments = {max(k for k, s in enumerate(cache._starts) if s <= i) for i in indices}
    return sum((cache.folder / rel).stat().st_size for f in fragments for rel in cache._files[f])


def test_reads_through_a_small_cache_equal_the_local_lake_and_stay_bounded(
    lakes: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    local, remote, options = lakes
    expected = VLMDataset(local, image_size=SIZE)
    # a bound of about two of the six fragments: the cache must evict as the reads move on
    data_bytes = sum(p.stat().st_size for p in Path(local, "data").iterdir())
    bound = data_bytes // 3
    ds = VLMDataset(
        remote, options, image_size=SIZE, cache_dir=str(tmp_path / "c"), cache_bytes=bound
    )
    assert len(ds) == len(expected) == DOCS - len(DELETED)
    order = list(range(len(ds)))
    random.Random(3).shuffle(order)
    for start in range(0, len(order), 3):
        batch = order[start : start + 3]
        got, want = ds.__getitems__(batch), expected.__getitems__(batch)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert torch.equal(got.images(), want.images())
        cache = ds._reader
        assert cache.cached_bytes() <= max(bound, _fragment_bytes(cache, batch))
    assert cache.downloaded_bytes > data_bytes  # evicted fragments came back
    assert cache.store_reads == 0  # every batch came from the local copy
    assert {t for t, _ in ds.__getitems__(list(range(len(ds))))} == {
        f"document {i}" for i in range(DOCS) if f"doc{i:02d}" not in DELETED
    }
    assert not list(cache.folder.rglob(".*.part"))


def test_a_second_epoch_with_a_large_cache_gets_no_data_from_the_store(
    lakes: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    _, remote, options = lakes
    ds = VLMDataset(remote, options, image_size=SIZE, cache_dir=str(tmp_path / "c"))
    first = [ds.__getitems__([i, len(ds) - 1 - i]).images() for i in range(len(ds) // 2)]
    cache = ds._reader
    downloaded = cache.downloaded_bytes
    assert cache.cached_bytes() == sum(
        (cache.folder / rel).stat().st_size for files in cache._files for rel in files
    )
    assert downloaded > cache.cached_bytes() > 0  # + the manifest and deletion files
    assert cache.store_reads == 0
    with recorded_s3_requests() as requests:
        second = [ds.__getitems__([i, len(ds) - 1 - i]).images() for i in range(len(ds) // 2)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert cache.downloaded_bytes == downloaded
    assert [r for r in requests if r.method == "GET"] == []


def test_dataloader_workers_share_one_cache(
    lakes: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    local, remote, options = lakes
    folder = tmp_path / "shared"

    def batches(uri: str, opts: dict[str, str], **kwargs: Any) -> list[Any]:
        ds = VLMDataset(uri, opts, image_size=SIZE, output="uint8", **kwargs)
        loader = DataLoader(ds, batch_size=4, num_workers=2, **VLMDataset.loader_kwargs())
        return [(tuple(texts), images) for texts, images in loader]

    got = batches(remote, options, cache_dir=str(folder))
    want = batches(local, {})
    assert [t for t, _ in got] == [t for t, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    (version_folder,) = folder.iterdir()
    cached = sorted(p.name for p in (version_folder / "table.lance" / "data").iterdir())
    fragments = lance.dataset(remote, storage_options=options).get_fragments()
    assert cached == sorted(f.path for frag in fragments for f in frag.metadata.data_files())
    assert not list(folder.rglob(".*.part"))


def test_cache_settings_are_checked_and_ignored_for_a_local_lake(
    lakes: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    local, remote, options = lakes
    assert VLMDataset(local, cache_dir=str(tmp_path / "c")).cache_dir is None
    with pytest.raises(ValueError, match="cache_bytes=0 must be a positive number"):
        VLMDataset(remote, options, cache_dir=str(tmp_path / "c"), cache_bytes=0)


@pytest.mark.parametrize("virtual", [False, True])
def test_store_settings_come_back_from_lance_options(virtual: bool) -> None:
    settings = StoreSettings(
        endpoint_url="http://127.0.0.1:9000",
        region="cn-hangzhou",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret-example",
        session_token="token-example",
        virtual_hosted_style=virtual,
        max_attempts=3,
    )
    uri = "s3://bucket/lake/multimodal.lance"
    assert StoreSettings.from_lance_options(settings.lance_storage_options(uri), uri) == settings
