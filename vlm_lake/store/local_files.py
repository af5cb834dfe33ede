"""Local folders as an object store: listing in S3's key order, file metadata as ETags."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from vlm_lake.store.object_info import ObjectInfo


def walk_in_key_order(folder: Path) -> Iterator[ObjectInfo]:
    """Yield files under ``folder`` in the order S3 lists keys (byte-wise by full path).

    Sorting a folder's entries with ``name/`` for sub-folders and recursing in that order
    gives the lexicographic order of full paths, streaming, without listing everything.

    ``folder`` must be resolved (absolute, no symbolic links): every path built under it is
    then resolved already, so only the symbolic links met on the way are resolved again
    (resolving every file costs a system call per path component, per file).
    """
    entries = sorted(os.scandir(folder), key=lambda e: e.name + ("/" if e.is_dir() else ""))
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():
            yield from walk_in_key_order(path.resolve() if entry.is_symlink() else path)
        elif entry.is_file():
            yield local_info(path, resolved=not entry.is_symlink())


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def local_info(p: Path, *, resolved: bool = False) -> ObjectInfo:
    """A file as a listed object: its resolved path, size, and mtime-size as ETag."""
    st = p.stat()
    path = str(p) if resolved else str(p.resolve())
    return ObjectInfo(path, path, st.st_size, f"{st.st_mtime_ns}-{st.st_size}")
