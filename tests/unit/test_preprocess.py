"""The seed's preprocessing (resize 256, center crop 224, ImageNet normalisation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import sample_image_bytes
from PIL import Image

from vlm_lake.imaging.decode import decode_rgb
from vlm_lake.imaging.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_uint8,
    normalize_batch,
    resize_center_crop,
    resized_size,
)


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_resized_size_is_torchvisions() -> None:
    assert resized_size(451, 300, 256) == (384, 256)  # int(256 * 451 / 300) = 384
    assert resized_size(300, 451, 256) == (256, 384)
    assert resized_size(256, 256, 256) == (256, 256)
    assert resized_size(100, 50, 256) == (512, 256)  # upscales small images, as torchvision


def test_center_crop_takes_the_middle() -> None:
    image = Image.new("RGB", (300, 256), (0, 0, 0))
    image.paste((255, 0, 0), (38, 16, 262, 240))  # the 224x224 middle is red
    crop = np.asarray(resize_center_crop(image, 256, 224))
    assert crop.shape == (224, 224, 3)
    assert (crop[..., 0] == 255).all() and (crop[..., 1] == 0).all()
    with pytest.raises(ValueError, match="crop=300 must be between 1 and resize=256"):
        resize_center_crop(image, 256, 300)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "CMYK", "P"])
def test_any_mode_becomes_a_uint8_rgb_crop(mode: str) -> None:
    image = _gradient(320, 240).convert(mode)
    fmt = "JPEG" if mode in ("RGB", "L", "CMYK") else "PNG"
    tensor = imagenet_uint8(_encode(image, fmt))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 224, 224)
    assert int(tensor.max()) > 100  # real pixels, not an empty canvas


def test_draft_decodes_large_jpegs_at_reduced_scale_with_nearly_the_same_pixels() -> None:
    data = _encode(_gradient(1200, 900), "JPEG", quality=95)
    assert decode_rgb(data, draft_min=256).size == (600, 450)  # 1/2: 1/4 would be < 256
    assert decode_rgb(data).size == (1200, 900)
    small = _encode(_gradient(500, 375), "JPEG")
    assert decode_rgb(small, draft_min=256).size == (500, 375)  # under 2x: full decode
    fast = imagenet_uint8(data, draft=True).float()
    full = imagenet_uint8(data, draft=False).float()
    assert fast.shape == full.shape == (3, 224, 224)
    assert float((fast - full).abs().mean()) < 2.0  # gray levels of 255
    with pytest.raises(ValueError, match="draft_min=0"):
        decode_rgb(data, draft_min=0)


def test_normalize_batch_uses_the_imagenet_statistics() -> None:
    mean_pixel = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8)
    batch = mean_pixel.view(1, 3, 1, 1).expand(2, 3, 4, 4).contiguous()
    out = normalize_batch(batch)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    pairs = list(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    expected = [(round(m * 255) / 255 - m) / s for m, s in pairs]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[:, channel], torch.tensor(value), atol=1e-6)
    white = normalize_batch(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), channels_last=False)
    assert torch.allclose(white.flatten(), torch.tensor([(1 - m) / s for m, s in pairs]))
    with pytest.raises(ValueError, match=r"dtype torch.float32 and shape \(1, 3, 2, 2\)"):
        normalize_batch(torch.zeros(1, 3, 2, 2))


def test_sample_photo_crop() -> None:
    tensor = imagenet_uint8(sample_image_bytes("image2.jpg"))
    assert tensor.shape == (3, 224, 224)
