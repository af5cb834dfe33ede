"""Batches from DataLoader workers to the main process through reused shared memory.

``VLMDataset`` decodes a whole batch into one ``uint8`` ``[B, K, 3, H, W]`` buffer. Inside
a DataLoader worker that buffer is named shared memory the worker keeps and reuses
(:class:`BufferPool`), and :class:`Shipment` pickles a batch as the buffer's name: the main
process maps each buffer once (:func:`_mapped`), copies the batch out (converting it to
float32 there for ``output="float"``) and hands the buffer back by setting a flag byte.
New shared memory costs a page fault per 4 KiB written, and torch's default of a file
descriptor per batch costs a socket handshake and a new mapping per batch; docs/loader.md
explains the design, docs/benchmarks.md has the numbers.

This uses torch's private storage-sharing functions, so it is guarded by the torch version
it was written for (:data:`WRITTEN_FOR_TORCH`): with another torch, or without those
functions, :data:`AVAILABLE` is False, batches are made in ordinary memory and cross to
the main process through torch's own shared-memory pickling (slower, same values), and
that is logged once per process.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import get_worker_info

log = logging.getLogger(__name__)

#: The torch release (major.minor) whose private sharing functions this module calls.
WRITTEN_FOR_TORCH = "2.13"


def _private_api_present() -> bool:
    try:
        from torch.multiprocessing.reductions import rebuild_storage_filename  # noqa: F401
    except ImportError:
        return False
    storage = torch.UntypedStorage
    names = ("_new_using_filename_cpu", "_share_filename_cpu_", "_shared_incref", "_new_shared")
    return all(hasattr(storage, name) for name in names)


#: Whether this torch is the one the transport was written for, with its private functions.
AVAILABLE = torch.__version__.split("+")[0].startswith(WRITTEN_FOR_TORCH + ".") and (
    _private_api_present()
)
_warned = False


def _unavailable() -> None:
    """Log once per process that batches take torch's own (slower) way."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "torch %s is not %s.x, for which the loader's shared-memory batch buffers were "
            "written: batches go through torch's own shared memory instead (slower, same "
            "values)",
            torch.__version__,
            WRITTEN_FOR_TORCH,
        )


#: Shared-memory batch buffers each DataLoader worker keeps for reuse (see BufferPool):
#: the batches a worker has in flight (``prefetch_factor``, 2 by default) plus two. Each
#: holds one batch's uint8 pixels: at most ``POOLED_BATCH_BYTES`` (uint8 output), a quarter
#: of that (float output).
POOL_BUFFERS = 4
# Flag byte after a pooled buffer's pixels: the main process sets it once it has copied the
# batch out. The pixels are followed by 64 bytes so the flag never shares their cache line.
_RELEASED = 1
_FLAG_ROOM = 64


@dataclass(eq=False)
class Buffer:
    """A worker's shared-memory batch buffer: ``nbytes`` of pixels, then the flag byte.

    ``handle`` names it for the main process: ``(manager socket, shared memory name, size)``
    of torch's file_system sharing (see :func:`_mapped`).
    """

    storage: torch.UntypedStorage
    nbytes: int
    handle: tuple[bytes, bytes, int]
    shipped: bool = False

    @classmethod
    def new(cls, nbytes: int) -> Buffer:
        """A buffer in new named shared memory (reads as zeros)."""
        storage = torch.UntypedStorage._new_using_filename_cpu(nbytes + _FLAG_ROOM)
        return cls(storage, nbytes, storage._share_filename_cpu_())

    def released(self) -> bool:
        """Whether the main process has copied the batch out and handed the buffer back."""
        return bool(self.storage[self.nbytes] == _RELEASED)


class BufferPool:
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
        self.buffers: list[Buffer] = []

    def take(self, nbytes: int) -> tuple[Buffer, bool]:
        """A buffer for ``nbytes`` of pixels, and whether it is new (new ones read as zeros)."""
        self.buffers = [b for b in self.buffers if b.shipped]
        for buf in self.buffers:
            if buf.nbytes == nbytes and buf.released():
                buf.storage[nbytes] = 0
                buf.shipped = False
                return buf, False
        if len(self.buffers) >= self.size:  # make room: drop released ones of another size
            self.buffers = [b for b in self.buffers if not b.released()]
        buf = Buffer.new(nbytes)
        if len(self.buffers) < self.size:
            self.buffers.append(buf)
        return buf, True


_pool: tuple[int, BufferPool] | None = None


def worker_pool() -> BufferPool | None:
    """This DataLoader worker's buffer pool; None outside a worker."""
    global _pool
    if get_worker_info() is None:
        return None
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), BufferPool(POOL_BUFFERS))
    return _pool[1]


#: Worker buffers the main process keeps mapped, by name, with the worker's process id
#: (see :func:`_mapped`); most recently used last.
MAPPED: OrderedDict[bytes, tuple[int, torch.UntypedStorage]] = OrderedDict()
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
    every batch, through a socket connection with an authentication handshake, then map the
    buffer anew, and copying out of a new mapping faults in every page: main-process CPU at
    every batch (docs/benchmarks.md#loader). A named buffer (torch's file_system sharing,
    per buffer: the process-wide strategy is left alone) is opened once and kept here, and
    torch's cache of shared storages then finds it for every later batch. A mapping is let
    go once more than :data:`MAPPED_BUFFERS` are kept (the oldest first; a later batch in it
    just maps it again) or once its worker (process ``worker``) has exited.
    """
    from torch.multiprocessing.reductions import rebuild_storage_filename

    storage = rebuild_storage_filename(torch.UntypedStorage, manager, name, size)
    if name in MAPPED:
        MAPPED.move_to_end(name)
        return storage
    for key, (owner, _) in list(MAPPED.items()):
        if owner != worker and not _alive(owner):
            del MAPPED[key]
    MAPPED[name] = (worker, storage)
    while len(MAPPED) > MAPPED_BUFFERS:
        MAPPED.popitem(last=False)
    return storage


def _arrive(
    worker: int,
    manager: bytes,
    name: bytes,
    size: int,
    shape: tuple[int, ...],
    to_float: bool,
) -> torch.Tensor:
    """Unpickle a :class:`Shipment` in the main process.

    The batch is copied out of the worker's buffer (converted to float32 on the way for
    ``output="float"``), then the buffer is handed back by setting its flag byte.
    """
    storage = _mapped(worker, manager, name, size)
    pixels = torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)
    out = torch.div(pixels, 255.0) if to_float else pixels.clone()
    storage[size - _FLAG_ROOM] = _RELEASED
    return out


class Shipment:
    """A batch sent by a worker: pickled as the name of the worker's buffer and its shape.

    The main process receives what :func:`_arrive` makes of it: a ``[B, K, 3, H, W]``
    tensor of its own, float32 or uint8.
    """

    __slots__ = ("buffer", "shape", "to_float")

    def __init__(self, buffer: Buffer, shape: tuple[int, ...], to_float: bool) -> None:
        self.buffer = buffer
        self.shape = shape
        self.to_float = to_float

    def __reduce__(self) -> tuple[Any, ...]:
        # A reference for the trip, as torch's own pickling of a named storage takes: the
        # main process's rebuild_storage_filename drops it again.
        self.buffer.storage._shared_incref()
        return _arrive, (os.getpid(), *self.buffer.handle, self.shape, self.to_float)


#: The largest batch (in bytes of the output tensor) that goes through a worker's reused
#: buffers: the main process copies it out on arrival, and glibc serves allocations up to
#: 32 MiB from memory it reuses; above that every copy would fault in new pages (4 KiB
#: each), costlier than new shared memory in the worker.
POOLED_BATCH_BYTES = 32 * 1024 * 1024


def new_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in new shared memory, which reads as zeros (a new file)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def batch_pixels(
    shape: tuple[int, ...], to_float: bool
) -> tuple[torch.Tensor, Buffer | None, bool]:
    """A ``uint8`` tensor for a batch's pixels, its pooled buffer, and whether it is zeros.

    Inside a DataLoader worker the tensor lives in a pooled shared-memory buffer (see
    :class:`BufferPool`) when the batch's output is at most :data:`POOLED_BATCH_BYTES`;
    a new one reads as zeros. A bigger uint8 batch goes to new shared memory (sent as is),
    a bigger float32 one to ordinary memory (converted into shared memory by
    :func:`collate`). Outside a worker it is ordinary memory, zeroed.
    """
    pool = worker_pool()
    if pool is not None and not AVAILABLE:
        _unavailable()
        return torch.zeros(shape, dtype=torch.uint8), None, True
    pixels_bytes = math.prod(shape)
    if pool is None or pixels_bytes * (4 if to_float else 1) > POOLED_BATCH_BYTES:
        if pool is None or to_float:
            return torch.zeros(shape, dtype=torch.uint8), None, True
        return new_shared(shape, torch.uint8), None, True
    buffer, fresh = pool.take(pixels_bytes)
    pixels = torch.empty(0, dtype=torch.uint8).set_(buffer.storage, 0, shape)
    return pixels, buffer, fresh
