"""One batch of ``VLMDataset`` samples, and the collate that ships it between processes.

``VLMDataset.__getitems__`` decodes a batch into one ``uint8`` ``[B, K, 3, H, W]`` tensor
and returns it as a :class:`Batch`; :func:`collate` hands that tensor to the main process
through :mod:`vlm_lake.training.shm_transport` without a ``torch.stack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from vlm_lake.training.shm_transport import AVAILABLE, Buffer, Shipment, new_shared

__all__ = ["Batch", "Sample", "collate", "to_tensor"]

Sample = tuple[str, torch.Tensor]


def to_tensor(image: Any) -> torch.Tensor:
    """Convert an RGB Pillow image to a float tensor ``[3, H, W]`` in [0, 1]."""
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class Batch(Sequence[Sample]):
    """The samples of one ``__getitems__`` call, over one ``[B, K, 3, H, W]`` uint8 batch.

    Each sample's images are a view of ``pixels`` (uint8 output) or of their float32
    conversion (float output, made on first access; :func:`collate` never needs it).
    """

    def __init__(
        self,
        texts: list[str],
        pixels: torch.Tensor,
        to_float: bool,
        buffer: Buffer | None,
        text_batch: Any = None,
    ) -> None:
        self.texts = texts
        self.text_batch = text_batch
        self.pixels = pixels
        self.to_float = to_float
        self.buffer = buffer
        self._images: torch.Tensor | None = None

    def images(self) -> torch.Tensor:
        """The whole batch in the dataset's output dtype."""
        if self._images is None:
            self._images = torch.div(self.pixels, 255.0) if self.to_float else self.pixels
        return self._images

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.texts[index], self.images()[index]


def collate(samples: Sequence[Sample]) -> list[Any]:
    """Collate ``VLMDataset`` samples into ``[texts, images]``, as ``default_collate`` does.

    A batch straight from :meth:`VLMDataset.__getitems__` already holds its images as one
    ``[B, K, 3, H, W]`` tensor: no ``torch.stack``. Inside a DataLoader worker a batch of
    up to ``shm_transport.POOLED_BATCH_BYTES`` crosses to the main process as ``uint8`` through a
    shared-memory buffer that the worker reuses: the main process copies it out on arrival,
    converting it to float32 there for ``output="float"`` (a quarter of the bytes through
    shared memory). So inside a worker the images are then a stand-in that only the trip to
    the main process turns into a tensor: use this function as the DataLoader's
    ``collate_fn`` (see :meth:`VLMDataset.loader_kwargs`), not inside another collate
    function. A bigger batch is made in new shared memory and sent as is, as the default
    collate does. Anything other than such a batch goes to ``default_collate``.

    Args:
        samples: ``(text, images)`` pairs.

    Returns:
        ``[texts, images]``: the tuple of texts (or what the dataset's ``text_transform``
        made of the batch's texts, e.g. a tokenizer's tensors) and the ``[B, K, 3, H, W]``
        images.
    """
    if not isinstance(samples, Batch):
        return default_collate(samples)
    texts = tuple(samples.texts) if samples.text_batch is None else samples.text_batch
    if samples.buffer is not None:
        samples.buffer.shipped = True
        return [texts, Shipment(samples.buffer, tuple(samples.pixels.shape), samples.to_float)]
    if samples.to_float and get_worker_info() is not None and AVAILABLE:
        out = new_shared(tuple(samples.pixels.shape), torch.float32)  # float32, shared
        return [texts, torch.div(samples.pixels, 255.0, out=out)]
    return [texts, samples.images()]
