"""``VLMDataset``: a PyTorch Dataset reading ``multimodal_lance`` by row.

Each item is ``(text, images)`` with ``images`` a float tensor ``[K, 3, H, W]`` in [0, 1]
(as torchvision's ``Resize((224, 224))`` + ``ToTensor`` would give) and zeros in the slots a
document has no image for, so the default collate gives ``[B, K, 3, 224, 224]``.

Rows are fetched with ``LanceDataset.take`` (a batch at a time through ``__getitems__``),
never by collecting the table. The dataset is opened lazily in whichever process reads,
keyed by process id, because Lance is not fork-safe: a DataLoader worker never reuses the
parent's handle. Use ``multiprocessing_context="forkserver"`` (see :meth:`loader_kwargs`)
to avoid forking a process that has Lance loaded at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlm_lake import lance_io, publish
from vlm_lake.images import decode_rgb
from vlm_lake.multimodal import image_columns
from vlm_lake.text_ingest import image_id_columns

Sample = tuple[str, torch.Tensor]


def to_tensor(image: Any) -> torch.Tensor:
    """Convert an RGB Pillow image to a float tensor ``[3, H, W]`` in [0, 1]."""
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class VLMDataset(Dataset[Sample]):
    """Documents with their images, ready for a ``DataLoader``.

    Args:
        uri: URI of ``multimodal.lance``.
        storage_options: Lance storage options (credentials, endpoint) for S3 URIs.
        version: Version or tag to read. The default, ``"published"``, is the last version
            that passed its blocking checks; None pins the latest (possibly unchecked)
            version. Whatever is chosen is pinned to a number when the dataset is built.
        image_size: Output height and width (224 as in the seed).
        transform: Optional callable applied to each RGB Pillow image instead of the
            default resize + to-tensor; must return a ``[3, H, W]`` tensor.
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        version: int | str | None = "published",
        image_size: int = 224,
        transform: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive number of pixels")
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        ds = publish.open_version(uri, self.storage_options, version)
        self.version = ds.version
        self.num_slots = len(image_id_columns(ds.schema))
        self.columns = ["docid", "text", *image_columns(self.num_slots)]
        missing = [c for c in self.columns if c not in ds.schema.names]
        if missing:
            raise ValueError(
                f"uri={uri!r} is not a multimodal dataset: columns {missing} are missing "
                f"(found {ds.schema.names})"
            )
        if self.num_slots == 0:
            raise ValueError(
                f"uri={uri!r} has no image_idN / imageN columns; a multimodal dataset needs "
                "at least one image slot"
            )
        self._len = ds.count_rows()
        self.image_size = image_size
        self.transform = transform
        self._ds: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ds"], state["_pid"] = None, None
        return state

    def _dataset(self) -> Any:
        if self._ds is None or self._pid != os.getpid():
            self._ds = lance_io.open_dataset(self.uri, self.storage_options, self.version)
            self._pid = os.getpid()
        return self._ds

    def _image_tensor(self, data: bytes | None, docid: str, slot: int) -> torch.Tensor:
        size = self.image_size
        if data is None:
            return torch.zeros(3, size, size)
        try:
            if self.transform is not None:
                return self.transform(decode_rgb(data))
            return to_tensor(decode_rgb(data, (size, size)))
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(
                f"docid={docid!r} image{slot} in {self.uri!r} (version {self.version}) "
                f"cannot be decoded: {exc}"
            ) from exc

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """Fetch several rows with one Lance ``take``; the DataLoader calls this per batch."""
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self._len:
                raise IndexError(f"index {i} out of range for VLMDataset of {self._len} rows")
        table = self._dataset().take(idx, columns=self.columns)
        docids = table.column("docid").to_pylist()
        texts = table.column("text").to_pylist()
        images = [table.column(c).to_pylist() for c in self.columns[2:]]
        samples: list[Sample] = []
        for row, (docid, text) in enumerate(zip(docids, texts, strict=True)):
            tensors = [
                self._image_tensor(col[row], docid, slot)
                for slot, col in enumerate(images, start=1)
            ]
            samples.append((text, torch.stack(tensors)))
        return samples

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self._len
        return self.__getitems__([index])[0]

    @staticmethod
    def loader_kwargs() -> dict[str, Any]:
        """DataLoader arguments that keep Lance out of forked workers (``num_workers > 0``)."""
        return {"multiprocessing_context": "forkserver"}
