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
:meth:`VLMDataset.loader_kwargs`) ships it to the main process as is: no ``torch.stack``,
float32 made on arrival from a quarter of the bytes, no new shared memory (whose page
faults cost more than the copies) per batch, and no file descriptor per batch either: the
main process maps each named buffer once (see ``_mapped``). The default collate works
too, at the cost of a stack into new shared memory. The dataset is opened lazily in
whichever process reads, keyed by process id, because Lance is not fork-safe: a DataLoader
worker never reuses the parent's handle. Use ``multiprocessing_context="forkserver"`` (in
``loader_kwargs``) to avoid forking a process that has Lance loaded at all.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.multiprocessing.reductions import rebuild_storage_filename
from torch.utils.data import Dataset, default_collate, get_worker_info

from vlm_lake import lance_io, publish
from vlm_lake.images import decode_rgb
from vlm_lake.multimodal import image_columns
from vlm_lake.preprocess import to_float
from vlm_lake.text_ingest import image_id_columns

__all__ = ["OUTPUTS", "VLMDataset", "collate", "to_float", "to_tensor"]

Sample = tuple[str, torch.Tensor]

_BANDS = ("R", "G", "B")

#: Values of ``VLMDataset(output=...)``: float32 in [0, 1], or uint8 0..255.
OUTPUTS: tuple[str, ...] = ("float", "uint8")


def to_tensor(image: Any) -> torch.Tensor:
    """Convert an RGB Pillow image to a float tensor ``[3, H, W]`` in [0, 1]."""
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


#: Shared-memory batch buffers each DataLoader worker keeps for reuse (see _BufferPool):
#: the batches a worker has in flight (``prefetch_factor``, 2 by default) plus two. Each
#: holds one batch's uint8 pixels: at most ``POOLED_BATCH_BYTES`` (uint8 output), a quarter
#: of that (float output).
POOL_BUFFERS = 4
# Flag byte after a pooled buffer's pixels: the main process sets it once it has copied the
# batch out. The pixels are followed by 64 bytes so the flag never shares their cache line.
_RELEASED = 1
_FLAG_ROOM = 64


@dataclass(eq=False)
class _Buffer:
    """A worker's shared-memory batch buffer: ``nbytes`` of pixels, then the flag byte.

    ``handle`` names it for the main process: ``(manager socket, shared memory name, size)``
    of torch's file_system sharing (see :func:`_mapped`).
    """

    storage: torch.UntypedStorage
    nbytes: int
    handle: tuple[bytes, bytes, int]
    shipped: bool = False

    @classmethod
    def new(cls, nbytes: int) -> _Buffer:
        """A buffer in new named shared memory (reads as zeros)."""
        storage = torch.UntypedStorage._new_using_filename_cpu(nbytes + _FLAG_ROOM)
        return cls(storage, nbytes, storage._share_filename_cpu_())

    def released(self) -> bool:
        return bool(self.storage[self.nbytes] == _RELEASED)


class _BufferPool:
    """Shared-memory buffers of one DataLoader worker, reused once the main process is done.

    New shared memory costs a page fault and a page of zeros for every 4 KiB first written
    (on the 2-core benchmark machine about 5% of the decode time of a 224x224 uint8 image,
    four times that for float32), so a worker decodes into buffers it keeps. A buffer is
    reused only if :func:`collate` shipped it (so nothing else in the worker kept a view of
    it) and the main process then set its flag byte after copying the batch out (see
    :func:`_arrive`): the main process never keeps a view of a pooled buffer. A buffer
    handed out but not shipped (the default collate, a custom one) is forgotten, never
    reused.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffers: list[_Buffer] = []

    def take(self, nbytes: int) -> tuple[_Buffer, bool]:
        """A buffer for ``nbytes`` of pixels, and whether it is new (new ones read as zeros)."""
        self.buffers = [b for b in self.buffers if b.shipped]
        for buf in self.buffers:
            if buf.nbytes == nbytes and buf.released():
                buf.storage[nbytes] = 0
                buf.shipped = False
                return buf, False
        if len(self.buffers) >= self.size:  # make room: drop released ones of another size
            self.buffers = [b for b in self.buffers if not b.released()]
        buf = _Buffer.new(nbytes)
        if len(self.buffers) < self.size:
            self.buffers.append(buf)
        return buf, True


_pool: tuple[int, _BufferPool] | None = None


def _worker_pool() -> _BufferPool | None:
    """This DataLoader worker's buffer pool; None outside a worker."""
    global _pool
    if get_worker_info() is None:
        return None
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), _BufferPool(POOL_BUFFERS))
    return _pool[1]


#: Worker buffers the main process keeps mapped, by name, with the worker's process id
#: (see :func:`_mapped`); most recently used last.
_MAPPED: OrderedDict[bytes, tuple[int, torch.UntypedStorage]] = OrderedDict()
#: At most this many stay mapped: the buffers of 8 workers (POOL_BUFFERS each).
MAPPED_BUFFERS = 8 * POOL_BUFFERS


def _alive(pid: int) -> bool:
    """Whether our process ``pid`` still runs (another user's process with it: ours is gone)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _mapped(worker: int, manager: bytes, name: bytes, size: int) -> torch.UntypedStorage:
    """The main process's mapping of a worker's buffer, made on its first batch only.

    Torch's own sharing of a tensor (file descriptors) would hand over a new descriptor for
    every batch, through a socket connection with an authentication handshake, then map
    the buffer anew, and copying out of a new mapping faults in every page: about 1.5 ms
    of the main process's CPU per 8-document batch, 5% of what the workers decode in the
    meantime on 2 cores. A named buffer (torch's file_system sharing, per buffer: the
    process-wide strategy is left alone) is opened once and kept here, and torch's cache
    of shared storages then finds it for every later batch. A mapping is let go once more
    than :data:`MAPPED_BUFFERS` are kept (the oldest first; a later batch in it just maps
    it again) or once its worker (process ``worker``) has exited.
    """
    storage = rebuild_storage_filename(torch.UntypedStorage, manager, name, size)
    if name in _MAPPED:
        _MAPPED.move_to_end(name)
        return storage
    for key, (owner, _) in list(_MAPPED.items()):
        if owner != worker and not _alive(owner):
            del _MAPPED[key]
    _MAPPED[name] = (worker, storage)
    while len(_MAPPED) > MAPPED_BUFFERS:
        _MAPPED.popitem(last=False)
    return storage


def _arrive(
    worker: int,
    manager: bytes,
    name: bytes,
    size: int,
    shape: tuple[int, ...],
    to_float: bool,
) -> torch.Tensor:
    """Unpickle a :class:`_Shipment` in the main process.

    The batch is copied out of the worker's buffer (converted to float32 on the way for
    ``output="float"``), then the buffer is handed back by setting its flag byte.
    """
    storage = _mapped(worker, manager, name, size)
    pixels = torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)
    out = torch.div(pixels, 255.0) if to_float else pixels.clone()
    storage[size - _FLAG_ROOM] = _RELEASED
    return out


class _Shipment:
    """A batch sent by a worker: pickled as the name of the worker's buffer and its shape.

    The main process receives what :func:`_arrive` makes of it: a ``[B, K, 3, H, W]``
    tensor of its own, float32 or uint8.
    """

    __slots__ = ("buffer", "shape", "to_float")

    def __init__(self, buffer: _Buffer, shape: tuple[int, ...], to_float: bool) -> None:
        self.buffer = buffer
        self.shape = shape
        self.to_float = to_float

    def __reduce__(self) -> tuple[Any, ...]:
        # A reference for the trip, as torch's own pickling of a named storage takes: the
        # main process's rebuild_storage_filename drops it again.
        self.buffer.storage._shared_incref()
        return _arrive, (os.getpid(), *self.buffer.handle, self.shape, self.to_float)


class _Batch(Sequence[Sample]):
    """The samples of one ``__getitems__`` call, over one ``[B, K, 3, H, W]`` uint8 batch.

    Each sample's images are a view of ``pixels`` (uint8 output) or of their float32
    conversion (float output, made on first access; :func:`collate` never needs it).
    """

    def __init__(
        self, texts: list[str], pixels: torch.Tensor, to_float: bool, buffer: _Buffer | None
    ) -> None:
        self.texts = texts
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
    up to :data:`POOLED_BATCH_BYTES` crosses to the main process as ``uint8`` through a
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
        ``[texts, images]``: the tuple of texts and the ``[B, K, 3, H, W]`` images.
    """
    if not isinstance(samples, _Batch):
        return default_collate(samples)
    texts = tuple(samples.texts)
    if samples.buffer is not None:
        samples.buffer.shipped = True
        return [texts, _Shipment(samples.buffer, tuple(samples.pixels.shape), samples.to_float)]
    if samples.to_float and get_worker_info() is not None:  # float32 into new shared memory
        out = _new_shared(tuple(samples.pixels.shape), torch.float32)
        return [texts, torch.div(samples.pixels, 255.0, out=out)]
    return [texts, samples.images()]


#: The largest batch (in bytes of the output tensor) that goes through a worker's reused
#: buffers: the main process copies it out on arrival, and glibc serves allocations up to
#: 32 MiB from memory it reuses; above that every copy would fault in new pages (4 KiB
#: each), costlier than new shared memory in the worker.
POOLED_BATCH_BYTES = 32 * 1024 * 1024


def _new_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in new shared memory, which reads as zeros (a new file)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _batch_pixels(
    shape: tuple[int, ...], to_float: bool
) -> tuple[torch.Tensor, _Buffer | None, bool]:
    """A ``uint8`` tensor for a batch's pixels, its pooled buffer, and whether it is zeros.

    Inside a DataLoader worker the tensor lives in a pooled shared-memory buffer (see
    :class:`_BufferPool`) when the batch's output is at most :data:`POOLED_BATCH_BYTES`;
    a new one reads as zeros. A bigger uint8 batch goes to new shared memory (sent as is),
    a bigger float32 one to ordinary memory (converted into shared memory by
    :func:`collate`). Outside a worker it is ordinary memory, zeroed.
    """
    pool = _worker_pool()
    pixels_bytes = math.prod(shape)
    if pool is None or pixels_bytes * (4 if to_float else 1) > POOLED_BATCH_BYTES:
        if pool is None or to_float:
            return torch.zeros(shape, dtype=torch.uint8), None, True
        return _new_shared(shape, torch.uint8), None, True
    buffer, fresh = pool.take(pixels_bytes)
    pixels = torch.empty(0, dtype=torch.uint8).set_(buffer.storage, 0, shape)
    return pixels, buffer, fresh


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
    ) -> None:
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
        self.output = output
        self.draft = draft
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

    def _decode_error(self, exc: Exception, index: int, slot: int) -> ValueError:
        docid = self._dataset().take([index], columns=["docid"]).column(0)[0].as_py()
        return ValueError(
            f"docid={docid!r} image{slot} in {self.uri!r} (version {self.version}) "
            f"cannot be decoded: {exc}"
        )

    def _decode_into(self, out: np.ndarray, data: bytes, index: int, slot: int) -> None:
        """Decode ``data`` resized to ``image_size`` square into ``out`` (uint8 [3, H, W])."""
        size = self.image_size
        try:
            image = decode_rgb(data, (size, size), draft_min=size if self.draft else None)
        except (OSError, Image.DecompressionBombError) as exc:
            raise self._decode_error(exc, index, slot) from exc
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
        # docid is only needed to name a bad image: fetched only then (_decode_error).
        table = self._dataset().take(idx, columns=self.columns[1:])
        texts = table.column("text").to_pylist()
        slots = [table.column(c).to_pylist() for c in self.columns[2:]]
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
        pixels, buffer, zeroed = _batch_pixels(shape, self.output == "float")
        array = pixels.numpy()
        for slot, col in enumerate(slots):
            for row, data in enumerate(col):
                if data is not None:
                    self._decode_into(array[row, slot], data, idx[row], slot + 1)
                elif not zeroed:  # a reused buffer: missing images must be zeros
                    array[row, slot] = 0
        return _Batch(texts, pixels, self.output == "float", buffer)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self._len
        return self.__getitems__([index])[0]

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
