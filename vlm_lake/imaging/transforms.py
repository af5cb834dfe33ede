"""The seed's ImageNet preprocessing, without torchvision.

``Resize(256)`` (shorter side to 256, bilinear with antialiasing, as torchvision does on a
Pillow image), ``CenterCrop(224)``, ``ToTensor`` and ``Normalize`` with the ImageNet mean and
standard deviation. Any pixel mode becomes RGB first (see
:func:`vlm_lake.imaging.decode.decode_rgb`).

The work is split in two so it can run where it is cheapest: :func:`imagenet_uint8` decodes,
resizes and crops on the CPU and returns ``uint8`` (a quarter of the bytes of float32), and
:func:`normalize_batch` turns a whole batch into normalised floats on the model's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vlm_lake.imaging.decode import decode_rgb

#: ImageNet channel means and standard deviations (RGB, on the 0..1 scale).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Shorter side after the resize, and the side of the center crop.
RESIZE = 256
CROP = 224
#: Names this preprocessing in the identity stored with every feature vector.
PREPROCESSING = f"rgb-resize{RESIZE}-bilinear-centercrop{CROP}-imagenet-norm"


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size after torchvision's ``Resize(short_side)``, as ``(width, height)``.

    The shorter side becomes ``short_side``; the longer one is scaled by the same factor and
    truncated, as torchvision does.
    """
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def resize_center_crop(image: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """Apply torchvision's ``Resize(resize)`` then ``CenterCrop(crop)`` to an RGB image.

    Args:
        image: RGB image.
        resize: Shorter side after the resize.
        crop: Side of the square center crop; at most ``resize``.

    Returns:
        A ``crop`` x ``crop`` image.
    """
    if not 1 <= crop <= resize:
        raise ValueError(f"crop={crop!r} must be between 1 and resize={resize!r}")
    size = resized_size(*image.size, resize)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def imagenet_uint8(
    data: bytes, *, resize: int = RESIZE, crop: int = CROP, draft: bool = True
) -> torch.Tensor:
    """Decode image bytes to the seed's crop as ``uint8`` ``[3, crop, crop]`` (RGB).

    Args:
        data: Encoded image bytes (any format and pixel mode :func:`decode_rgb` takes).
        resize: Shorter side after the resize (256).
        crop: Side of the center crop (224).
        draft: Decode large JPEGs (both sides >= 2 x ``resize``) at a reduced DCT scale
            that keeps the shorter side >= ``resize``; much faster, nearly the same pixels.

    Returns:
        The cropped image, channels first.

    Raises:
        OSError: The bytes are not a decodable image (see :func:`decode_rgb`).
    """
    image = resize_center_crop(
        decode_rgb(data, draft_min=resize if draft else None), resize=resize, crop=crop
    )
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1)


def to_float(
    batch: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    non_blocking: bool = True,
) -> torch.Tensor:
    """``uint8`` images -> float32 on ``device``: ``x / 255``, or ``(x / 255 - mean) / std``.

    The ``uint8`` tensor is moved first (4x fewer bytes to a GPU than float32) and
    converted there. Without ``mean`` / ``std`` the result equals
    ``VLMDataset(output="float")``; with ``mean=IMAGENET_MEAN, std=IMAGENET_STD`` it is the
    ImageNet normalisation of :func:`normalize_batch`.

    Args:
        batch: ``uint8`` RGB images with the channels in dimension -3: ``[3, H, W]``,
            ``[B, 3, H, W]`` or ``[B, K, 3, H, W]`` (``VLMDataset(output="uint8")``).
        device: Where the result lives.
        mean: Per-channel means on the 0..1 scale (3 values), or None for 0.
        std: Per-channel standard deviations on the 0..1 scale (3 positive values), or
            None for 1.
        non_blocking: Copy asynchronously where possible (a pinned batch to a GPU).

    Returns:
        float32 tensor of the same shape on ``device``.

    Raises:
        ValueError: The batch is not ``uint8`` with 3 channels in dimension -3, or ``mean``
            / ``std`` are not 3 values (``std`` positive).
    """
    if batch.dtype != torch.uint8 or batch.dim() < 3 or batch.shape[-3] != 3:
        raise ValueError(
            f"batch of dtype {batch.dtype} and shape {tuple(batch.shape)} is not allowed; "
            "expected uint8 [..., 3, H, W]"
        )
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != 3:
            raise ValueError(f"{name}={values!r} is not allowed; expected 3 values (R, G, B)")
    if std is not None and min(std) <= 0:
        raise ValueError(f"std={std!r} is not allowed; expected 3 positive values")
    x = batch.to(device, non_blocking=non_blocking).float()
    if mean is None and std is None:
        return x.div_(255.0)
    # (x / 255 - mean) / std computed as (x - 255 mean) / (255 std): one pass fewer.
    zeros, ones = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    m = torch.tensor(zeros if mean is None else mean, device=x.device).mul_(255.0)
    s = torch.tensor(ones if std is None else std, device=x.device).mul_(255.0)
    return x.sub_(m.view(3, 1, 1)).div_(s.view(3, 1, 1))


def normalize_batch(
    batch: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
) -> torch.Tensor:
    """``uint8`` ``[B, 3, H, W]`` -> float32 normalised with the ImageNet mean and std.

    The ``uint8`` batch is moved first (4x fewer bytes to a GPU), then converted there.

    Args:
        batch: RGB images, channels first, values 0..255.
        device: Where the result lives.
        channels_last: Return the batch in channels-last memory format (faster convolutions
            with oneDNN and cuDNN).

    Returns:
        ``(batch / 255 - mean) / std`` as float32 on ``device``.
    """
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(
            f"batch of dtype {batch.dtype} and shape {tuple(batch.shape)} is not allowed; "
            "expected uint8 [B, 3, H, W]"
        )
    x = to_float(batch, device=device, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


#: How an image becomes ``size x size``: ``squash`` (the seed's resize to the square,
#: aspect ratio lost), ``pad`` (the longer side to ``size``, centred on black) or ``crop``
#: (the shorter side to ``size``, the centre cut out).
RESIZE_MODES: tuple[str, ...] = ("squash", "pad", "crop")


def fit_square(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Resize an RGB image to ``size x size`` by ``mode`` (bilinear, see :data:`RESIZE_MODES`).

    Raises:
        ValueError: ``mode`` is not one of :data:`RESIZE_MODES`.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize={mode!r} is not allowed; expected one of {RESIZE_MODES}")
    width, height = image.size
    if mode == "squash":
        return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)
    if mode == "pad":
        scale = size / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new("RGB", (size, size))
        canvas.paste(
            image.resize(new, Image.BILINEAR), ((size - new[0]) // 2, (size - new[1]) // 2)
        )
        return canvas
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.resize(new, Image.BILINEAR).crop((left, top, left + size, top + size))
