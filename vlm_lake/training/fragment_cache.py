"""A bounded local copy of a remote Lance version, filled fragment by fragment as read.

``VLMDataset(cache_dir=..., cache_bytes=...)`` on an ``s3://`` lake reads through a
:class:`FragmentCache`: before a batch is taken, each fragment it touches is downloaded
whole (its data files, one streaming ``GetObject`` each, no more than 8 MiB in memory)
into ``cache_dir/<version digest>/``, next to a copy of the version's manifest and its
deletion files, and the batch is taken from that local Lance dataset: same rows, same order,
same bytes as from the store. Whole-file reads suit object stores better than the many
small ranged reads of a random-access ``take``, and later epochs read the local disk.

The folder is shared by every process reading the same version (DataLoader workers,
ranks on one node): files appear by atomic rename, so a half-downloaded file is never
read. It is kept at most ``cache_bytes``: after each download the least recently used
fragments are deleted until the data files fit, never one the current batch needs. A
file deleted by another process between the download and the read is downloaded again;
if that keeps happening (a cache far too small for the processes sharing it) the batch
is read straight from the store. Measured numbers: docs/benchmarks.md#loader.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlm_lake.store import uris
from vlm_lake.store.errors import ObjectNotFoundError
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.store.settings import StoreSettings
from vlm_lake.tables import lance_io
from vlm_lake.training.replay import version_digest

log = logging.getLogger(__name__)

#: Bytes copied per read when a file is downloaded.
CHUNK = 8 << 20
#: Reads of a batch from the cache before it is read from the store instead.
ATTEMPTS = 3


def manifest_names(version: int) -> list[str]:
    """The names a Lance version's manifest may have: V2 naming, then the older V1."""
    return [f"{(1 << 64) - 1 - version:020d}.manifest", f"{version}.manifest"]


class FragmentCache:
    """Reads rows of one pinned remote version through a bounded local copy.

    Args:
        remote: The remote dataset, opened at the version to read.
        uri: Its URI (``s3://...``).
        storage_options: The Lance storage options it was opened with.
        root: Local folder holding the caches (one sub-folder per version).
        max_bytes: Most bytes of data files kept in the cache folder.
    """

    def __init__(
        self,
        remote: Any,
        uri: str,
        storage_options: dict[str, str],
        root: str | Path,
        max_bytes: int,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes={max_bytes!r} must be a positive number of bytes")
        self.remote = remote
        self.uri = uris.normalize(uri).rstrip("/")
        self.storage_options = storage_options
        self.max_bytes = max_bytes
        self.folder = Path(root) / version_digest(remote)[:32] / "table.lance"
        self._store = ObjectStore(StoreSettings.from_lance_options(storage_options, uri))
        self._files: list[list[str]] = []
        self._starts: list[int] = []
        self._deletions: list[str] = []
        start = 0
        for fragment in remote.get_fragments():
            meta = fragment.metadata
            self._files.append([f"data/{f.path}" for f in meta.data_files()])
            self._starts.append(start)
            deleted = meta.deletion_file
            if deleted is not None:
                self._deletions.append(deleted.path(fragment.fragment_id))
            start += meta.physical_rows - (deleted.num_deleted_rows if deleted else 0)
        self._local: Any = None
        #: Bytes this process downloaded, and batches it had to read from the store.
        self.downloaded_bytes = 0
        self.store_reads = 0

    def take(self, indices: Sequence[int], columns: list[str]) -> Any:
        """``remote.take(indices, columns)``, read from the local copy.

        Args:
            indices: Row offsets in the version.
            columns: Columns to read.

        Returns:
            The rows as a ``pyarrow.Table``, in the order of ``indices``.
        """
        needed = sorted({bisect.bisect_right(self._starts, i) - 1 for i in indices})
        for attempt in range(1, ATTEMPTS + 1):
            self._ensure(needed)
            try:
                return self._open().take(list(indices), columns=columns)
            except OSError as exc:  # a file evicted by another process meanwhile
                if "Not found" not in str(exc):
                    raise
                log.debug("cache read %d of %d missed a file: %s", attempt, ATTEMPTS, exc)
        log.warning(
            "fragment cache %s is too small for the processes sharing it (%d bytes); this "
            "batch is read from %s",
            self.folder,
            self.max_bytes,
            self.uri,
        )
        self.store_reads += 1
        return self.remote.take(list(indices), columns=columns)

    def _open(self) -> Any:
        if self._local is None:
            self._fetch_manifest()
            # Lance reads every fragment's deletion file to place row offsets: all are
            # fetched here (a few bytes each) and never evicted.
            for rel in self._deletions:
                if not (self.folder / rel).exists():
                    self._download(rel)
            self._local = lance_io.open_dataset(str(self.folder), {}, int(self.remote.version))
        return self._local

    def _fetch_manifest(self) -> None:
        """Copy the version's manifest into the cache folder (once per folder)."""
        versions = self.folder / "_versions"
        names = manifest_names(int(self.remote.version))
        if any((versions / name).exists() for name in names):
            return
        for name in names:
            try:
                self._download(f"_versions/{name}")
                return
            except ObjectNotFoundError:
                continue
        raise FileNotFoundError(
            f"no manifest for version {self.remote.version} under {self.uri}/_versions "
            f"(looked for {names})"
        )

    def _ensure(self, needed: list[int]) -> None:
        """Download the files of the ``needed`` fragments that are not cached; evict."""
        now = time.time()
        added = False
        for fragment in needed:
            for rel in self._files[fragment]:
                path = self.folder / rel
                try:
                    os.utime(path, (now, now))  # most recently used
                except FileNotFoundError:
                    self._download(rel)
                    added = True
        if added:
            keep = {rel for fragment in needed for rel in self._files[fragment]}
            self._evict(keep)

    @contextlib.contextmanager
    def _only_one(self, rel: str) -> Iterator[None]:
        """Hold the file lock of ``rel``: one process downloads it, the others wait."""
        lock = self.folder / ".locks" / rel.replace("/", "_")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _download(self, rel: str) -> None:
        """Copy ``uri/rel`` into the cache folder, appearing there only when complete.

        Processes sharing the folder download a file once: the others wait for the lock
        and find it there.
        """
        path = self.folder / rel
        with self._only_one(rel):
            if not path.exists():
                self._copy(rel, path)

    def _copy(self, rel: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            with self._store.open_read(f"{self.uri}/{rel}") as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            self.downloaded_bytes += partial.stat().st_size
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def cached_bytes(self) -> int:
        """Bytes of the data files in the cache folder now (what ``max_bytes`` bounds)."""
        return sum(size for _, size, _ in self._cached())

    def _cached(self) -> list[tuple[float, int, str]]:
        data = self.folder / "data"
        entries = []
        for entry in os.scandir(data) if data.is_dir() else ():
            if entry.name.startswith("."):
                continue  # a download in progress
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # evicted by another process meanwhile
            entries.append((stat.st_mtime, stat.st_size, f"data/{entry.name}"))
        return entries

    def _evict(self, keep: set[str]) -> None:
        """Delete least recently used files (not in ``keep``) until the rest fit."""
        entries = sorted(self._cached())
        total = sum(size for _, size, _ in entries)
        for _, size, rel in entries:
            if total <= self.max_bytes:
                return
            if rel in keep:
                continue
            (self.folder / rel).unlink(missing_ok=True)
            total -= size
