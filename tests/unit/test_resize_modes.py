"""VLMDataset resize modes pixel by pixel against Pillow, and the batch text hook."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import photo_variant, sample_image_bytes, write_published
from PIL import Image
from torch.utils.data import DataLoader

from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.dataset import VLMDataset

WIDE = sample_image_bytes("image1.jpg")  # 451 x 300
TALL = photo_variant(3, size=(60, 150), fmt="PNG")
SQUARE = photo_variant(5, size=(90, 90))
SIZE = 64


def _reference(data: bytes, mode: str) -> np.ndarray:
    """Pillow alone: RGB, bilinear, then the mode's geometry; CHW uint8."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if mode == "squash":
        out = rgb.resize((SIZE, SIZE), Image.BILINEAR)
    elif mode == "pad":
        s = SIZE / max(w, h)
        nw, nh = round(w * s), round(h * s)
        out = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
        out.paste(rgb.resize((nw, nh), Image.BILINEAR), ((SIZE - nw) // 2, (SIZE - nh) // 2))
    else:
        s = SIZE / min(w, h)
        nw, nh = max(SIZE, round(w * s)), max(SIZE, round(h * s))
        x, y = (nw - SIZE) // 2, (nh - SIZE) // 2
        out = rgb.resize((nw, nh), Image.BILINEAR).crop((x, y, x + SIZE, y + SIZE))
    return np.asarray(out).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def mm(tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = [
        {"docid": "wide", "text": "a wide photo", "image_id1": "w", "image1": WIDE},
        {"docid": "tall", "text": "a tall png", "image_id1": "t", "image1": TALL},
        {"docid": "square", "text": "square", "image_id1": "s", "image1": SQUARE},
    ]
    for row in rows:
        row.update(image_id2=None, image2=None, image_id3=None, image3=None)
    uri = str(tmp_path_factory.mktemp("resize") / "multimodal.lance")
    write_published(pa.Table.from_pylist(rows, schema=multimodal_schema(3)), uri)
    return uri


@pytest.mark.parametrize("mode", ["squash", "pad", "crop"])
def test_each_mode_equals_pillow_pixel_for_pixel(mm: str, mode: str) -> None:
    ds = VLMDataset(mm, image_size=SIZE, resize=mode, draft=False, output="uint8")
    for index, data in enumerate((WIDE, TALL, SQUARE)):
        _, images = ds[index]
        assert images.shape == (3, 3, SIZE, SIZE) and images.dtype == torch.uint8
        assert np.array_equal(images[0].numpy(), _reference(data, mode)), (mode, index)
        assert int(images[1:].abs().sum()) == 0  # empty slots stay zero
    if mode == "pad":  # the wide photo is letterboxed: black bands above and below
        wide = ds[0][1][0]
        assert int(wide[:, 0].sum()) == 0 and int(wide[:, -1].sum()) == 0
        assert int(wide[:, SIZE // 2].sum()) > 0


def test_unknown_mode_is_refused(mm: str) -> None:
    with pytest.raises(ValueError, match=r"resize='stretch' is not allowed"):
        VLMDataset(mm, resize="stretch")


class _Lengths:
    """A stand-in tokenizer: the batch's texts -> their lengths (picklable)."""

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        return {"length": torch.tensor([len(t) for t in texts]), "texts": list(texts)}


@pytest.mark.parametrize("workers", [0, 1])
def test_the_text_hook_receives_each_batch(mm: str, workers: int) -> None:
    ds = VLMDataset(mm, image_size=SIZE, text_transform=_Lengths())
    kwargs = (
        VLMDataset.loader_kwargs()
        if workers
        else {"collate_fn": VLMDataset.loader_kwargs()["collate_fn"]}
    )
    batches = list(DataLoader(ds, batch_size=2, num_workers=workers, **kwargs))
    tokens, images = batches[0]
    assert tokens["texts"] == ["a wide photo", "a tall png"]
    assert tokens["length"].tolist() == [12, 10]
    assert images.shape == (2, 3, 3, SIZE, SIZE)
    assert batches[1][0]["texts"] == ["square"]
