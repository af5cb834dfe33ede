"""VLMDataset: multimodal.lance -> (text, [K, 3, 224, 224]) items and DataLoader batches."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import photo_variant, sample_image_bytes, write_published
from PIL import Image
from torch.utils.data import DataLoader

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.image_ingest import IMAGE_SCHEMA
from vlm_lake.multimodal import multimodal_schema
from vlm_lake.object_store import ObjectStore
from vlm_lake.text_ingest import text_schema
from vlm_lake.torch_dataset import VLMDataset


def _gray_jpeg() -> bytes:
    with Image.open(io.BytesIO(sample_image_bytes("image3.jpg"))) as im:
        gray = im.convert("L")
    buf = io.BytesIO()
    gray.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


JPEG1 = sample_image_bytes("image1.jpg")
JPEG2 = sample_image_bytes("image2.jpg")
PNG = sample_image_bytes("image4.png")
GRAY = _gray_jpeg()

# (docid, text, [slot1, slot2, slot3])
DOCS: list[tuple[str, str, list[bytes | None]]] = [
    ("doc_001", "two images, third slot empty", [JPEG1, JPEG2, None]),
    ("doc_002", "three images: jpeg, png, grayscale jpeg", [JPEG2, PNG, GRAY]),
    ("doc_003", "one image in the middle", [None, JPEG1, None]),
]


def _table(docs: list[tuple[str, str, list[bytes | None]]]) -> pa.Table:
    rows = []
    for docid, text, images in docs:
        row: dict[str, Any] = {"docid": docid, "text": text}
        for k, data in enumerate(images, start=1):
            row[f"image_id{k}"] = None if data is None else f"{docid}_img{k}"
            row[f"image{k}"] = data
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=multimodal_schema(3))


def _expected_tensor(data: bytes, size: int = 224) -> torch.Tensor:
    """Independent reference: Pillow RGB + bilinear resize, scaled to [0, 1]."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def mm_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("torch") / "multimodal.lance")
    write_published(_table(DOCS), uri, schema=multimodal_schema(3))
    return uri


@pytest.fixture(scope="module")
def reference(mm_uri: str) -> tuple[list[str], torch.Tensor]:
    """Texts and images read with num_workers=0 (the baseline for the worker variants)."""
    batches = list(DataLoader(VLMDataset(mm_uri), batch_size=8, num_workers=0))
    assert len(batches) == 1
    texts, images = batches[0]
    return list(texts), images


def test_len_and_item(mm_uri: str) -> None:
    ds = VLMDataset(mm_uri)
    assert len(ds) == 3
    assert ds.num_slots == 3
    assert ds.version == 1
    for index, (_, text, images) in enumerate(DOCS):
        got_text, tensor = ds[index]
        assert got_text == text
        assert tensor.shape == (3, 3, 224, 224)
        assert tensor.dtype == torch.float32
        assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
        for slot, data in enumerate(images):
            if data is None:
                assert torch.count_nonzero(tensor[slot]) == 0
            else:
                assert torch.count_nonzero(tensor[slot]) > 0
                assert torch.allclose(tensor[slot], _expected_tensor(data), atol=1e-6)


def test_grayscale_slot_has_equal_channels(mm_uri: str) -> None:
    _, tensor = VLMDataset(mm_uri)[1]
    gray = tensor[2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    png = tensor[1]
    assert not torch.equal(png[0], png[2])  # a colour image stays coloured


def test_negative_index_and_getitems(mm_uri: str) -> None:
    ds = VLMDataset(mm_uri)
    last_text, last = ds[-1]
    assert last_text == DOCS[2][1]
    assert torch.equal(last, ds[2][1])
    items = ds.__getitems__([2, 0])
    assert [t for t, _ in items] == [DOCS[2][1], DOCS[0][1]]
    assert torch.equal(items[1][1], ds[0][1])


@pytest.mark.parametrize("index", [3, 100, -4])
def test_out_of_range_raises_index_error(mm_uri: str, index: int) -> None:
    ds = VLMDataset(mm_uri)
    with pytest.raises(IndexError, match="out of range for VLMDataset of 3 rows"):
        ds[index]


def test_getitems_out_of_range(mm_uri: str) -> None:
    with pytest.raises(IndexError):
        VLMDataset(mm_uri).__getitems__([0, 3])


def test_dataloader_batch(mm_uri: str, reference: tuple[list[str], torch.Tensor]) -> None:
    texts, images = reference
    assert texts == [d[1] for d in DOCS]
    assert images.shape == (3, 3, 3, 224, 224)
    assert images.dtype == torch.float32
    ds = VLMDataset(mm_uri)
    for i in range(3):
        assert torch.equal(images[i], ds[i][1])
    batches = list(DataLoader(ds, batch_size=2, shuffle=False))
    assert [b[1].shape[0] for b in batches] == [2, 1]
    assert isinstance(batches[0][0], tuple | list) and len(batches[0][0]) == 2


def _check_same(batches: list[Any], reference: tuple[list[str], torch.Tensor]) -> None:
    assert len(batches) == 1
    texts, images = batches[0]
    assert isinstance(texts, tuple | list)
    assert list(texts) == reference[0]
    assert images.shape == (3, 3, 3, 224, 224)
    assert torch.equal(images, reference[1])


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_dataloader_fork_workers(mm_uri: str, reference: tuple[list[str], torch.Tensor]) -> None:
    ds = VLMDataset(mm_uri)
    ds[0]  # Lance opened in the parent before forking: workers must reopen their own handle
    loader = DataLoader(ds, batch_size=8, num_workers=2, timeout=120)
    _check_same(list(loader), reference)


def test_dataloader_forkserver_workers(
    mm_uri: str, reference: tuple[list[str], torch.Tensor]
) -> None:
    assert VLMDataset.loader_kwargs() == {"multiprocessing_context": "forkserver"}
    loader = DataLoader(
        VLMDataset(mm_uri),
        batch_size=8,
        num_workers=2,
        timeout=120,
        **VLMDataset.loader_kwargs(),
    )
    _check_same(list(loader), reference)


def test_pickle_round_trip(mm_uri: str) -> None:
    ds = VLMDataset(mm_uri)
    before = ds[1]
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 3
    assert clone.uri == mm_uri and clone.version == ds.version
    text, tensor = clone[1]
    assert text == before[0]
    assert torch.equal(tensor, before[1])


def test_version_is_pinned(tmp_path: Path) -> None:
    uri = str(tmp_path / "mm.lance")
    write_published(_table(DOCS), uri, schema=multimodal_schema(3))
    ds = VLMDataset(uri)
    write_published(_table(DOCS[:1]), uri, schema=multimodal_schema(3), mode="overwrite")
    assert len(ds) == 3 and ds[2][0] == DOCS[2][1]
    assert len(VLMDataset(uri)) == 1
    assert len(VLMDataset(uri, version=1)) == 3


def test_image_size_and_transform(mm_uri: str) -> None:
    _, small = VLMDataset(mm_uri, image_size=32)[0]
    assert small.shape == (3, 3, 32, 32)
    assert torch.allclose(small[0], _expected_tensor(JPEG1, 32), atol=1e-6)

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.full((3, 16, 16), image.size[0] / 1000.0)

    _, out = VLMDataset(mm_uri, image_size=16, transform=transform)[0]
    assert out.shape == (3, 3, 16, 16)
    assert torch.allclose(out[0], torch.full((3, 16, 16), 0.451))
    assert torch.allclose(out[1], torch.full((3, 16, 16), 0.640))
    assert torch.count_nonzero(out[2]) == 0
    with pytest.raises(ValueError, match="image_size=0"):
        VLMDataset(mm_uri, image_size=0)


def test_undecodable_image_names_doc_and_slot(tmp_path: Path) -> None:
    uri = str(tmp_path / "mm.lance")
    docs = [("good", "ok", [photo_variant(1), None, None]), ("bad", "x", [None, b"junk", None])]
    write_published(_table(docs), uri, schema=multimodal_schema(3))
    ds = VLMDataset(uri)
    assert ds[0][1].shape == (3, 3, 224, 224)
    with pytest.raises(ValueError, match=r"docid='bad' image2 .* cannot be decoded"):
        ds[1]


def test_non_multimodal_dataset_raises(tmp_path: Path) -> None:
    texts = str(tmp_path / "texts.lance")
    write_published(
        pa.Table.from_pylist(
            [
                {
                    "docid": "a",
                    "text": "t",
                    "image_id1": "i",
                    "image_id2": None,
                    "source_uri": "a.json",
                    "record_sha256": "0" * 64,
                }
            ],
            schema=text_schema(2),
        ),
        texts,
    )
    with pytest.raises(ValueError, match=r"is not a multimodal dataset") as info:
        VLMDataset(texts)
    assert "['image1', 'image2']" in str(info.value)
    assert repr(texts) in str(info.value)

    images = str(tmp_path / "images.lance")
    write_published(pa.Table.from_pylist([], schema=IMAGE_SCHEMA), images)
    with pytest.raises(ValueError, match=r"columns \['docid', 'text'\] are missing"):
        VLMDataset(images)


def test_missing_dataset_raises(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "multimodal.lance")
    with pytest.raises(DatasetNotFoundError, match="no Lance dataset") as info:
        VLMDataset(missing)
    assert repr(missing) in str(info.value)


def test_dataset_on_s3(s3_store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/lake/multimodal.lance"
    opts = s3_store.storage_options(uri)
    write_published(_table(DOCS), uri, schema=multimodal_schema(3), storage_options=opts)
    ds = VLMDataset(uri, opts)
    assert len(ds) == 3
    text, tensor = ds[1]
    assert text == DOCS[1][1]
    assert torch.allclose(tensor[1], _expected_tensor(PNG), atol=1e-6)
    with pytest.raises(DatasetNotFoundError):
        VLMDataset(f"s3://{bucket}/lake/absent.lance", opts)


def test_dataset_without_image_slots_is_rejected(tmp_path: Path) -> None:
    uri = str(tmp_path / "no_slots.lance")
    write_published(pa.table({"docid": ["a"], "text": ["t"]}), uri)
    with pytest.raises(ValueError, match="no image_idN / imageN columns"):
        VLMDataset(uri)
