"""``VLMDataset``: a PyTorch Dataset reading ``multimodal_lance`` by row.

Each item is ``(text, images)`` with ``images`` a tensor ``[K, 3, H, W]`` and zeros in the
slots a document has no image for, so the default collate gives ``[B, K, 3, 224, 224]``.
By default ``images`` is float32 in [0, 1] (as torchvision's ``Resize((224, 224))`` +
``ToTensor`` would give); ``output="uint8"`` gives the same pixels as ``uint8`` 0..255, a
quarter of the bytes to move to the GPU, and :func:`to_float` turns such a batch into
(optionally normalised) floats on the device.

Rows are fetched with ``LanceDataset.take`` (a batch at a time through ``__getitems__``),
never by collecting the table. ``__getitems__`` decodes the whole batch into one ``uint8``
``[B, K, 3, H, W]`` tensor. Inside a DataLoader worker that tensor is a shared-memory
buffer the worker reuses, and :func:`collate` (the ``collate_fn`` of
:meth:`VLMDataset.loader_kwargs`) ships it to the main process as is (no ``torch.stack``;
float32 made on arrival from a quarter of the bytes): see
:mod:`vlm_lake.training.shm_transport`. The default collate works too, at the cost of a
stack into new shared memory. The dataset is opened lazily in
whichever process reads, keyed by process id. Lance is not fork-safe: once a process has
used Lance, two workers forked from it crash or hang at random when they read (measured:
66 of 100 pairs of forked readers failed). A copy of the dataset made by ``fork`` (the
DataLoader's default on Linux) therefore refuses to read, with a :class:`ForkedReaderError`
naming the fix: ``multiprocessing_context="forkserver"`` or ``"spawn"`` (in
``loader_kwargs``), where the dataset reaches each worker pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlm_lake.curation.exclusion_set import NO_EXCLUSIONS, kept_rows, load_exclusions
from vlm_lake.imaging.decode import decode_rgb
from vlm_lake.imaging.transforms import RESIZE_MODES, fit_square, to_float
from vlm_lake.store import uris
from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import image_columns, image_id_column, image_id_columns
from vlm_lake.training.batches import Batch, Sample, collate, to_tensor
from vlm_lake.training.fragment_cache import FragmentCache
from vlm_lake.training.replay import READ_MANIFEST_FORMAT, open_read, table_read
from vlm_lake.training.shm_transport import batch_pixels

__all__ = ["OUTPUTS", "VLMDataset", "collate", "to_float", "to_tensor"]

_BANDS = ("R", "G", "B")

#: Values of ``VLMDataset(output=...)``: float32 in [0, 1], or uint8 0..255.
OUTPUTS: tuple[str, ...] = ("float", "uint8")

#: Default bound of the local fragment cache (``cache_bytes``).
CACHE_BYTES = 16 << 30


class ForkedReaderError(RuntimeError):
    """A VLMDataset read in a process forked from the one that built it (Lance is not fork-safe)."""


class VLMDataset(Dataset[Sample]):
    """Documents with their images, ready for a ``DataLoader``.

    Args:
        uri: URI of ``multimodal.lance``.
        storage_options: Lance storage options (credentials, endpoint) for S3 URIs.
        version: Version or tag to read. The default, ``"published"``, is the last version
            that passed its blocking checks; None pins the latest (possibly unchecked)
            version. Whatever is chosen is pinned to a number when the dataset is built.
        image_size: Output height and width (224 as in the seed).
        transform: Optional callable applied to each RGB Pillow image (full size) instead
            of the default resize + to-tensor; must return a ``[3, H, W]`` tensor.
        output: ``"float"`` (default): float32 in [0, 1], the seed's ``ToTensor``.
            ``"uint8"``: the same pixels as 0..255; a quarter of the bytes between
            processes and to the GPU; convert there with :func:`to_float`.
        draft: Decode a JPEG whose sides are both at least twice ``image_size`` at a
            reduced DCT scale (1/2, 1/4 or 1/8) that keeps both sides >= ``image_size``,
            before the bilinear resize: several times faster on large photos, and within
            a few levels of the full decode (see ``decode_rgb(draft_min=...)``). Smaller
            sources and other formats are decoded in full either way.
        resize: How each image becomes ``image_size`` square: ``squash`` (the seed's
            resize, aspect ratio lost), ``pad`` (keep the aspect ratio, centre on black)
            or ``crop`` (shorter side to ``image_size``, centre crop); bilinear.
        text_transform: Called with the list of a batch's texts (a tokenizer); its result
            replaces the texts in what :func:`collate` returns.
        cache_dir: For an ``s3://`` lake: a local folder where the fragments read are kept
            (downloaded whole, shared by the DataLoader workers), so later epochs read the
            local disk; see :mod:`vlm_lake.training.fragment_cache`. Ignored for a local
            lake. None (default): every batch is read from the store.
        cache_bytes: Most bytes the fragment cache keeps; least recently used fragments
            are deleted first.
        curation_uri: ``curation.lance``: leave out what the curation excludes, as the
            exports do (excluded documents are not in the dataset, excluded images are
            zero padding). None (default): every document and image.
        curation_version: The curation version to apply (default: the published one).
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        version: int | str | None = "published",
        image_size: int = 224,
        transform: Callable[[Any], torch.Tensor] | None = None,
        output: str = "float",
        draft: bool = True,
        resize: str = "squash",
        text_transform: Callable[[list[str]], Any] | None = None,
        cache_dir: str | None = None,
        cache_bytes: int = CACHE_BYTES,
        curation_uri: str | None = None,
        curation_version: int | str = "published",
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize={resize!r} is not allowed; expected one of {RESIZE_MODES}")
        if text_transform is not None and transform is not None:
            raise ValueError(
                "text_transform with a transform is not allowed: the text hook runs on the "
                "batches collate makes from the dataset's own decoding; tokenize in your "
                "collate_fn when you bring an image transform"
            )
        if cache_bytes < 1:
            raise ValueError(f"cache_bytes={cache_bytes!r} must be a positive number of bytes")
        if image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive number of pixels")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r} is not allowed; expected one of {OUTPUTS}")
        if transform is not None and output != "float":
            raise ValueError(
                f"output={output!r} with a transform is not allowed: the transform returns "
                "its own tensors; use output='float' (the default) with a transform"
            )
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        ds = publish.open_version(uri, self.storage_options, version)
        self.version = ds.version
        self._tag = version if isinstance(version, str) else None
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
        self.curation_uri = curation_uri
        self.exclusions = NO_EXCLUSIONS
        self._rows: np.ndarray | None = None  # kept row positions, when documents are left out
        self._image_ids = [image_id_column(k) for k in range(1, self.num_slots + 1)]
        if curation_uri is not None:
            self.exclusions = load_exclusions(curation_uri, self.storage_options, curation_version)
            self._rows = kept_rows(ds, self.exclusions)
            if self._rows is not None:
                self._len = len(self._rows)
        self.image_size = image_size
        self.transform = transform
        self.output = output
        self.draft = draft
        self.resize = resize
        self.text_transform = text_transform
        self.cache_dir = cache_dir if cache_dir and uris.is_remote(uri) else None
        self.cache_bytes = cache_bytes
        self._ds: Any = None
        self._reader: Any = None
        self._pid: int | None = None
        # The process this object was built in; None in a pickled copy (spawn, forkserver).
        self._origin_pid: int | None = os.getpid()

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ds"], state["_reader"], state["_pid"], state["_origin_pid"] = (None,) * 4
        return state

    def _dataset(self) -> Any:
        if self._origin_pid not in (None, os.getpid()):
            raise ForkedReaderError(
                f"VLMDataset({self.uri!r}) was copied into process {os.getpid()} by fork "
                f"from process {self._origin_pid}, which has Lance loaded; Lance is not "
                "fork-safe (forked readers crash or hang at random). Start DataLoader "
                "workers with multiprocessing_context='forkserver' or 'spawn': "
                "DataLoader(dataset, num_workers=N, **VLMDataset.loader_kwargs())"
            )
        if self._ds is None or self._pid != os.getpid():
            self._ds = lance_io.open_dataset(self.uri, self.storage_options, self.version)
            self._reader = self._ds
            if self.cache_dir is not None:
                self._reader = FragmentCache(
                    self._ds, self.uri, self.storage_options, self.cache_dir, self.cache_bytes
                )
            self._pid = os.getpid()
        return self._ds

    def _take(self, indices: list[int], columns: list[str]) -> Any:
        """Rows from the table, through the fragment cache when there is one."""
        self._dataset()
        return self._reader.take(indices, columns=columns)

    def _decode_error(self, exc: Exception, index: int, slot: int) -> ValueError:
        docid = self._take([index], ["docid"]).column(0)[0].as_py()
        return ValueError(
            f"docid={docid!r} image{slot} in {self.uri!r} (version {self.version}) "
            f"cannot be decoded: {exc}"
        )

    def _decode_into(self, out: np.ndarray, data: bytes, index: int, slot: int) -> None:
        """Decode ``data`` resized to ``image_size`` square into ``out`` (uint8 [3, H, W])."""
        size = self.image_size
        squash = self.resize == "squash"
        try:
            image = decode_rgb(
                data, (size, size) if squash else None, draft_min=size if self.draft else None
            )
        except (OSError, Image.DecompressionBombError) as exc:
            raise self._decode_error(exc, index, slot) from exc
        if not squash:
            image = fit_square(image, size, self.resize)
        # One band at a time, straight from Pillow's pixels into the channel planes: cheaper
        # than np.asarray (a packed HWC copy) followed by a strided HWC -> CHW copy.
        planes = out.reshape(3, -1)
        for channel, band in enumerate(_BANDS):
            planes[channel] = np.frombuffer(image.tobytes("raw", band), dtype=np.uint8)

    def _transformed(self, data: bytes | None, index: int, slot: int) -> torch.Tensor:
        if data is None:
            return torch.zeros(3, self.image_size, self.image_size)
        try:
            image = decode_rgb(data)
        except (OSError, Image.DecompressionBombError) as exc:
            raise self._decode_error(exc, index, slot) from exc
        assert self.transform is not None
        return self.transform(image)

    def __getitems__(self, indices: Sequence[int]) -> Sequence[Sample]:
        """Fetch several rows with one Lance ``take``; the DataLoader calls this per batch.

        The images of all rows are decoded into one ``[B, K, 3, H, W]`` uint8 tensor
        (inside a DataLoader worker, a reused shared-memory buffer); each sample's images
        are a view of it, or of its float32 conversion (see :func:`collate`).
        """
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self._len:
                raise IndexError(f"index {i} out of range for VLMDataset of {self._len} rows")
        if self._rows is not None:  # positions in the table of the documents kept
            idx = [int(self._rows[i]) for i in idx]
        # docid is only needed to name a bad image: fetched only then (_decode_error).
        ids = self._image_ids if self.exclusions.images else []
        table = self._take(idx, self.columns[1:] + ids)
        texts = table.column("text").to_pylist()
        slots = [table.column(c).to_pylist() for c in self.columns[2:]]
        for col, key in zip(slots, ids, strict=False):  # images the curation left out
            for row, image_id in enumerate(table.column(key).to_pylist()):
                if image_id in self.exclusions.images:
                    col[row] = None
        if self.transform is not None:
            stacked = [
                torch.stack(
                    [
                        self._transformed(col[row], index, slot)
                        for slot, col in enumerate(slots, start=1)
                    ]
                )
                for row, index in enumerate(idx)
            ]
            return list(zip(texts, stacked, strict=True))
        size = self.image_size
        shape = (len(idx), self.num_slots, 3, size, size)
        pixels, buffer, zeroed = batch_pixels(shape, self.output == "float")
        array = pixels.numpy()
        for slot, col in enumerate(slots):
            for row, data in enumerate(col):
                if data is not None:
                    self._decode_into(array[row, slot], data, idx[row], slot + 1)
                elif not zeroed:  # a reused buffer: missing images must be zeros
                    array[row, slot] = 0
        hooked = None if self.text_transform is None else self.text_transform(texts)
        return Batch(texts, pixels, self.output == "float", buffer, hooked)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self._len
        return self.__getitems__([index])[0]

    def manifest(self) -> dict[str, Any]:
        """What this dataset reads, to build the same one later (:meth:`from_manifest`).

        The table's URI, Lance version, tag, row count and content digest (computed here,
        from the pinned version's fragment metadata), and the dataset's settings;
        JSON-serialisable.
        """
        return {
            "format": READ_MANIFEST_FORMAT,
            "tables": [table_read(self._dataset(), self.uri, self._tag).to_dict()],
            "dataset": {
                "image_size": self.image_size,
                "output": self.output,
                "draft": self.draft,
                "resize": self.resize,
                "curation_uri": self.curation_uri,
                "curation_version": self.exclusions.version,
            },
        }

    @classmethod
    def from_manifest(
        cls,
        manifest: dict[str, Any] | str,
        storage_options: dict[str, str] | None = None,
        **overrides: Any,
    ) -> VLMDataset:
        """The dataset a :meth:`manifest` describes: same rows, same order, same pixels.

        Args:
            manifest: The manifest, or the path of a JSON file holding it.
            storage_options: Lance storage options (credentials are never in a manifest).
            **overrides: Constructor arguments to use instead of the recorded ones (a
                ``transform`` or ``text_transform``, which a manifest cannot hold).

        Raises:
            ValueError: Not a reader manifest, or the recorded version is gone or differs
                (rows or digest).
        """
        if isinstance(manifest, str):
            with open(manifest, encoding="utf-8") as fh:
                manifest = json.load(fh)
        if manifest.get("format") != READ_MANIFEST_FORMAT:
            raise ValueError(
                f"format={manifest.get('format')!r} is not a reader manifest; expected "
                f"{READ_MANIFEST_FORMAT!r}"
            )
        (read,) = manifest["tables"]
        open_read(read, storage_options)
        settings = {**manifest["dataset"], **overrides}
        if settings.get("curation_version") is None:  # none was published: none applied
            settings.pop("curation_version", None)
            settings["curation_uri"] = None
        return cls(read["uri"], storage_options, version=int(read["version"]), **settings)

    @staticmethod
    def loader_kwargs() -> dict[str, Any]:
        """DataLoader arguments for ``num_workers > 0``.

        * ``multiprocessing_context="forkserver"``: keeps Lance out of forked workers;
        * ``collate_fn=collate``: each batch goes to the main process through a reused
          shared-memory buffer, as ``uint8`` (see :func:`collate`);
        * ``persistent_workers=True``: the workers (each with its Lance handle and buffers,
          torch and Pillow imported) stay alive between epochs instead of starting again.

        The DataLoader already runs each worker with one torch thread; one worker per core
        keeps the cores busy (decoding is the work). With a GPU, add ``pin_memory=True``
        (and prefer ``output="uint8"`` with :func:`to_float` on the device).
        """
        return {
            "multiprocessing_context": "forkserver",
            "collate_fn": collate,
            "persistent_workers": True,
        }
