"""VLMDataset: multimodal.lance -> (text, [K, 3, 224, 224]) items and DataLoader batches."""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import photo_variant, sample_image_bytes, write_published
from PIL import Image
from torch.utils.data import DataLoader, Subset

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.imaging.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch, to_float
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import IMAGE_SCHEMA, multimodal_schema, text_schema
from vlm_lake.training.dataset import ForkedReaderError, VLMDataset, collate
from vlm_lake.training.shm_transport import MAPPED as _MAPPED
from vlm_lake.training.shm_transport import POOL_BUFFERS, POOLED_BATCH_BYTES
from vlm_lake.training.shm_transport import BufferPool as _BufferPool
from vlm_lake.training.shm_transport import Shipment as _Shipment


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
def test_fork_started_workers_refuse_to_read_with_the_fix_named(mm_uri: str) -> None:
    """Forked readers of a process that used Lance crash at random: refuse, name the fix."""
    ds = VLMDataset(mm_uri)
    ds[0]  # Lance loaded and used in the parent, as in any pipeline process
    loader = DataLoader(
        ds, batch_size=1, num_workers=2, multiprocessing_context="fork", timeout=120
    )
    with pytest.raises(ForkedReaderError, match=r"forkserver.*loader_kwargs") as err:
        list(loader)
    assert mm_uri in str(err.value) and "not fork-safe" in str(err.value)
    assert ds[0][0] == DOCS[0][1]  # the parent's own reads are unaffected


def test_dataloader_forkserver_workers(
    mm_uri: str, reference: tuple[list[str], torch.Tensor]
) -> None:
    kwargs = VLMDataset.loader_kwargs()
    assert kwargs["multiprocessing_context"] == "forkserver"
    assert kwargs["collate_fn"] is collate and kwargs["persistent_workers"] is True
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
    _, small = VLMDataset(mm_uri, image_size=32, draft=False)[0]
    assert small.shape == (3, 3, 32, 32)
    assert torch.allclose(small[0], _expected_tensor(JPEG1, 32), atol=1e-6)
    # The default draft mode decodes the 451x300 JPEG at 1/8 scale (57x38) for a 32x32
    # output: not the same pixels, but close (measured: 3.9 levels of 255 on average; the
    # DCT's 8x8 box filter differs most from the bilinear filter at such a large ratio).
    _, drafted = VLMDataset(mm_uri, image_size=32)[0]
    assert drafted.shape == (3, 3, 32, 32) and not torch.equal(drafted[0], small[0])
    assert float((drafted[0] - small[0]).abs().mean()) < 6 / 255

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


# --- uint8 output, device-side normalisation, the zero-copy collate, draft mode -------------


def _expected_uint8(data: bytes, size: int = 224) -> torch.Tensor:
    """Independent reference: Pillow RGB + bilinear resize, uint8 [3, H, W]."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def test_uint8_output_pixels(mm_uri: str) -> None:
    ds = VLMDataset(mm_uri, output="uint8")
    for index, (_, text, images) in enumerate(DOCS):
        got_text, tensor = ds[index]
        assert got_text == text
        assert tensor.shape == (3, 3, 224, 224) and tensor.dtype == torch.uint8
        for slot, data in enumerate(images):
            if data is None:
                assert torch.count_nonzero(tensor[slot]) == 0
            else:
                assert torch.equal(tensor[slot], _expected_uint8(data))


def test_to_float_of_uint8_equals_float_output(mm_uri: str) -> None:
    texts8, u8 = collate(VLMDataset(mm_uri, output="uint8").__getitems__([0, 1, 2]))
    textsf, f32 = collate(VLMDataset(mm_uri).__getitems__([0, 1, 2]))
    assert texts8 == textsf == tuple(d[1] for d in DOCS)
    assert u8.shape == f32.shape == (3, 3, 3, 224, 224)
    converted = to_float(u8)
    assert converted.dtype == torch.float32
    assert torch.equal(converted, f32)  # bit for bit what output="float" gives
    assert float(u8[0, 0, 0, 0, 0]) / 255.0 == pytest.approx(float(f32[0, 0, 0, 0, 0]))


def test_to_float_imagenet_matches_normalize_batch(mm_uri: str) -> None:
    _, u8 = VLMDataset(mm_uri, output="uint8")[1]  # [K, 3, H, W] is a batch of K images
    got = to_float(u8, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.equal(got, normalize_batch(u8, channels_last=False))
    pixel = u8[0, :, 10, 20].float() / 255.0
    expected = (pixel - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(got[0, :, 10, 20], expected, atol=1e-5)
    only_mean = to_float(u8, mean=(0.5, 0.5, 0.5))
    assert torch.allclose(only_mean, u8.float() / 255.0 - 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "kwargs", "message"),
    [
        (torch.zeros(2, 3, 4, 4), {}, r"dtype torch.float32 and shape \(2, 3, 4, 4\)"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), {}, r"expected uint8 \[\.\.\., 3, H, W\]"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), {"mean": (0.5, 0.5)}, r"mean=\(0.5, 0.5\)"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}, r"positive"),
    ],
)
def test_to_float_rejects(batch: torch.Tensor, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_float(batch, **kwargs)


def test_output_and_transform_arguments_are_checked(mm_uri: str) -> None:
    with pytest.raises(ValueError, match=r"output='int16' is not allowed.*'float', 'uint8'"):
        VLMDataset(mm_uri, output="int16")
    with pytest.raises(ValueError, match=r"output='uint8' with a transform is not allowed"):
        VLMDataset(mm_uri, output="uint8", transform=lambda im: torch.zeros(3, 8, 8))


def test_collate_passes_the_batch_on_without_a_copy(mm_uri: str) -> None:
    items = VLMDataset(mm_uri, output="uint8").__getitems__([2, 0])
    texts, images = collate(items)
    assert texts == (DOCS[2][1], DOCS[0][1])  # a tuple, as default_collate gives
    assert images.shape == (2, 3, 3, 224, 224)
    assert images.data_ptr() == items[0][1].data_ptr()  # the same memory, no stack
    assert torch.equal(images[1], items[1][1])
    # Anything else (a plain list, a wrapped dataset's samples) is stacked as usual.
    copied_texts, copied = collate(list(items))
    assert copied_texts == texts and torch.equal(copied, images)
    assert copied.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("output", ["uint8", "float"])
def test_dataloader_with_loader_kwargs(
    mm_uri: str, reference: tuple[list[str], torch.Tensor], output: str
) -> None:
    loader = DataLoader(
        VLMDataset(mm_uri, output=output),
        batch_size=2,
        num_workers=2,
        timeout=120,
        **VLMDataset.loader_kwargs(),
    )
    for _ in range(2):  # two epochs through the same persistent workers
        batches = list(loader)
        assert [len(b[0]) for b in batches] == [2, 1]
        texts = [t for b in batches for t in b[0]]
        images = torch.cat([b[1] for b in batches])
        assert texts == reference[0]
        if output == "uint8":
            assert images.dtype == torch.uint8
            assert torch.equal(to_float(images), reference[1])
        else:
            assert torch.equal(images, reference[1])


def test_uint8_with_the_default_collate(mm_uri: str) -> None:
    texts, images = next(iter(DataLoader(VLMDataset(mm_uri, output="uint8"), batch_size=3)))
    assert list(texts) == [d[1] for d in DOCS]
    assert images.shape == (3, 3, 3, 224, 224) and images.dtype == torch.uint8
    assert torch.equal(images[0, 1], _expected_uint8(JPEG2))


def _large_jpeg(size: tuple[int, int]) -> bytes:
    """A real photo (the sample image2.jpg) scaled up to ``size`` and saved as JPEG."""
    with Image.open(io.BytesIO(JPEG2)) as im:
        big = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _one_image_dataset(tmp_path: Path, data: bytes, **kwargs: Any) -> torch.Tensor:
    uri = str(tmp_path / f"one-{len(data)}.lance")
    if not Path(uri).exists():
        write_published(_table([("d", "t", [data, None, None])]), uri, schema=multimodal_schema(3))
    return VLMDataset(uri, **kwargs)[0][1][0]


def test_draft_on_a_large_jpeg_is_close_to_the_full_decode(tmp_path: Path) -> None:
    data = _large_jpeg((1000, 800))  # both sides >= 2 x 224: decoded at 1/2 scale
    drafted = _one_image_dataset(tmp_path, data, output="uint8")
    full = _one_image_dataset(tmp_path, data, output="uint8", draft=False)
    assert drafted.shape == full.shape == (3, 224, 224)
    assert torch.equal(full, _expected_uint8(data))  # draft=False: the plain Pillow resize
    assert not torch.equal(drafted, full)  # the draft path was taken
    diff = (drafted.int() - full.int()).abs().float()
    # Measured: 0.30 levels (of 255) mean, 8 at most; the bound leaves room for codecs.
    assert float(diff.mean()) < 1.0
    assert float(diff.max()) < 32
    floats = _one_image_dataset(tmp_path, data)
    assert torch.equal(floats, drafted.float() / 255.0)


@pytest.mark.parametrize("size", [(447, 600), (600, 440)])
def test_draft_is_not_used_below_twice_the_target(tmp_path: Path, size: tuple[int, int]) -> None:
    data = _large_jpeg(size)  # one side < 448 = 2 x 224: a full decode either way
    drafted = _one_image_dataset(tmp_path, data, output="uint8")
    assert drafted.shape == (3, 224, 224)
    assert torch.equal(drafted, _expected_uint8(data))
    assert torch.equal(drafted, _one_image_dataset(tmp_path, data, output="uint8", draft=False))


def test_draft_follows_image_size(tmp_path: Path) -> None:
    data = _large_jpeg((600, 400))  # >= 2 x 112 but < 2 x 224
    assert torch.equal(_one_image_dataset(tmp_path, data, output="uint8"), _expected_uint8(data))
    small = _one_image_dataset(tmp_path, data, output="uint8", image_size=112)
    assert small.shape == (3, 112, 112)
    expected = _expected_uint8(data, 112)
    assert not torch.equal(small, expected)
    assert float((small.int() - expected.int()).abs().float().mean()) < 1.5


def test_pickle_keeps_output_and_draft(mm_uri: str) -> None:
    ds = VLMDataset(mm_uri, output="uint8", draft=False)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.output == "uint8" and clone.draft is False
    assert torch.equal(clone[0][1], ds[0][1])


def test_worker_buffers_are_reused_with_zeros_where_images_are_missing(
    mm_uri: str, reference: tuple[list[str], torch.Tensor]
) -> None:
    """One worker, one document per batch: every batch after the first few decodes into a
    buffer the main process handed back, which held another document's pixels."""
    for output in ("uint8", "float"):
        loader = DataLoader(
            VLMDataset(mm_uri, output=output),
            batch_size=1,
            num_workers=1,
            timeout=120,
            **VLMDataset.loader_kwargs(),
        )
        for _ in range(4):  # 12 batches through a pool of 4 buffers
            for i, (texts, images) in enumerate(loader):
                assert list(texts) == [reference[0][i]]
                got = to_float(images) if output == "uint8" else images
                assert torch.equal(got[0], reference[1][i])


def test_buffer_pool_hands_a_buffer_back_only_after_the_main_process_copied_it() -> None:
    pool = _BufferPool(2)
    first, fresh = pool.take(12)
    assert fresh and torch.count_nonzero(torch.tensor(list(first.storage))) == 0
    pixels = torch.empty(0, dtype=torch.uint8).set_(first.storage, 0, (1, 1, 3, 2, 2))
    pixels.fill_(7)
    first.shipped = True
    second, fresh = pool.take(12)  # the first is still on its way: a new one
    assert fresh and second.storage.data_ptr() != first.storage.data_ptr()
    # The trip to the main process: a copy comes out, the buffer is flagged as released.
    shape = (1, 1, 3, 2, 2)
    received = pickle.loads(ForkingPickler.dumps(_Shipment(first, shape, False)))
    assert torch.equal(received, torch.full(shape, 7, dtype=torch.uint8))
    assert received.data_ptr() != pixels.data_ptr()
    assert first.released()
    # The second was never shipped (say the default collate copied it): it is forgotten.
    again, fresh = pool.take(12)
    assert not fresh and again is first and not again.released()
    assert pool.buffers == [first]
    pixels.fill_(9)
    floats = pickle.loads(ForkingPickler.dumps(_Shipment(first, shape, True)))
    assert floats.dtype == torch.float32 and torch.allclose(
        floats, torch.full_like(floats, 9 / 255)
    )
    assert first.released()


def test_the_main_process_maps_a_worker_buffer_once_and_lets_go_when_the_worker_exits(
    mm_uri: str, reference: tuple[list[str], torch.Tensor]
) -> None:
    """12 batches per epoch through a worker's 4 buffers: each buffer is mapped in the main
    process once, not per batch. Without persistent workers every epoch has a new worker;
    the buffers of the one that exited are let go when the next one's arrive."""
    _MAPPED.clear()
    kwargs = {**VLMDataset.loader_kwargs(), "persistent_workers": False}
    dataset = Subset(VLMDataset(mm_uri, output="uint8"), [0, 1, 2] * 4)
    loader = DataLoader(dataset, batch_size=1, num_workers=1, timeout=120, **kwargs)
    previous: set[bytes] = set()
    for epoch in range(3):
        mappings: dict[bytes, set[int]] = {}
        for i, (texts, images) in enumerate(loader):
            assert list(texts) == [reference[0][i % 3]]
            assert torch.equal(to_float(images)[0], reference[1][i % 3])
            for name, (_, storage) in _MAPPED.items():
                mappings.setdefault(name, set()).add(id(storage))
        current = set(mappings) - previous
        assert 1 <= len(current) <= POOL_BUFFERS, f"epoch {epoch}: {sorted(current)}"
        assert all(len(mappings[name]) == 1 for name in current), mappings
        assert set(_MAPPED) == current, f"epoch {epoch}: the last worker's buffers kept"
        previous |= current


@pytest.mark.parametrize(("output", "size"), [("float", 600), ("uint8", 1120)])
def test_batches_over_the_pooled_size_go_through_new_shared_memory(
    mm_uri: str, output: str, size: int
) -> None:
    """3 documents x 3 slots at these sizes are over 32 MiB: made in new shared memory."""
    ds = VLMDataset(mm_uri, output=output, image_size=size)
    itemsize = 4 if output == "float" else 1
    assert 3 * 3 * 3 * size * size * itemsize > POOLED_BATCH_BYTES
    expected_texts, expected = collate(ds.__getitems__([0, 1, 2]))
    loader = DataLoader(ds, batch_size=3, num_workers=2, timeout=120, **VLMDataset.loader_kwargs())
    for _ in range(2):
        ((texts, images),) = list(loader)
        assert texts == expected_texts
        assert images.shape == (3, 3, 3, size, size) and images.dtype == expected.dtype
        assert torch.equal(images, expected)
        assert torch.count_nonzero(images[0, 2]) == 0 and torch.count_nonzero(images[2, 0]) == 0
