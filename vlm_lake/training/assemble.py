r"""Assemble an export from its shards: concatenation, and then the file's tail.

Locally the shard files are copied one after another into a temporary file that is
renamed into place. On S3 the object is a multipart upload whose parts are copied server
side from the shards (``UploadPartCopy``, no download): S3 requires every part but the
last to hold at least 5 MiB, so a run of shards smaller than that is read back (at most
5 MiB at a time) and uploaded as one part, and the last part carries the closing bracket.
:func:`plan_parts` decides which bytes travel which way; :class:`AssemblyReport` says how
many bytes were copied and how many moved through this process.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlm_lake.store import uris
from vlm_lake.store.errors import (
    ObjectStoreError,
    botocore_errors,
    raise_store_error,
    store_error,
)
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.training.shards import ALPACA, RecordFormat

log = logging.getLogger(__name__)

#: S3's smallest part (all but the last), largest part, and most parts per upload.
MIN_PART = 5 * 1024 * 1024
MAX_PART = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, stop)`` of shard number ``shard``."""

    shard: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Bytes in the piece."""
        return self.stop - self.start


@dataclass
class Part:
    r"""One part of the multipart upload: one copied piece, or pieces read and uploaded.

    Attributes:
        pieces: Shard byte ranges, in order.
        copy: True for a server-side copy of its single piece.
        tail: Bytes uploaded after the pieces: the file's tail (the last part only).
    """

    pieces: list[Piece] = field(default_factory=list)
    copy: bool = False
    tail: bytes = b""

    @property
    def size(self) -> int:
        """Bytes in the part."""
        return sum(p.size for p in self.pieces) + len(self.tail)


def _copy_parts(shard: int, start: int, stop: int, max_part: int) -> list[Part]:
    """``[start, stop)`` of a shard as copy parts of at most ``max_part`` bytes each."""
    count = -(-(stop - start) // max_part)
    edges = [start + (stop - start) * k // count for k in range(count + 1)]
    return [Part([Piece(shard, a, b)], copy=True) for a, b in zip(edges, edges[1:], strict=False)]


def plan_parts(
    sizes: Sequence[int],
    *,
    min_part: int = MIN_PART,
    max_part: int = MAX_PART,
    tail: bytes = ALPACA.tail,
) -> list[Part]:
    """The parts of the assembled object, for shards of ``sizes`` bytes, in order.

    Every part but the last holds at least ``min_part`` bytes and at most ``max_part``;
    the last one uploads what is left of the shards and the file's ``tail``. A shard of at
    least ``min_part`` bytes is copied; smaller ones are gathered into uploaded parts, and
    when such a run ends at a large shard, the first bytes of that shard complete the part.

    Raises:
        ValueError: More than :data:`MAX_PARTS` parts would be needed.
    """
    parts: list[Part] = []
    pending = Part()
    for index, size in enumerate(sizes):
        start = 0
        if size == 0:
            continue
        if pending.pieces:
            need = min_part - pending.size
            if size - need < min_part:
                pending.pieces.append(Piece(index, 0, size))
                if pending.size >= min_part:
                    parts.append(pending)
                    pending = Part()
                continue
            pending.pieces.append(Piece(index, 0, need))
            parts.append(pending)
            pending, start = Part(), need
        if size - start >= min_part:
            parts.extend(_copy_parts(index, start, size, max_part))
        elif size > start:
            pending.pieces.append(Piece(index, start, size))
    pending.tail = tail
    parts.append(pending)
    if len(parts) > MAX_PARTS:
        raise ValueError(
            f"{len(sizes)} shards need {len(parts)} parts, more than S3's {MAX_PARTS}: "
            "export with a larger shard_target_bytes"
        )
    return parts


@dataclass(frozen=True)
class AssemblyReport:
    """How the assembled file was made.

    Attributes:
        bytes: Size of the file.
        copied_bytes: Bytes copied server side (S3) or file to file (locally).
        uploaded_bytes: Bytes read back from small shards and uploaded (S3 only).
        parts: Parts of the multipart upload (0 locally).
    """

    bytes: int
    copied_bytes: int
    uploaded_bytes: int
    parts: int


def assemble(
    store: ObjectStore,
    shard_uris: Sequence[str],
    sizes: Sequence[int],
    out_uri: str,
    fmt: RecordFormat = ALPACA,
) -> AssemblyReport:
    r"""Write ``out_uri`` as the shards concatenated, then ``\n]\n`` (atomically).

    Args:
        store: Where the shards and the output are (both local or both on S3).
        shard_uris: The shard files, in file order (the first is the head shard).
        sizes: Their sizes in bytes.
        out_uri: The assembled file.
        fmt: The record format (its tail, and the file when there is no shard).
    """
    if not shard_uris:
        store.write_bytes(out_uri, fmt.empty)
        return AssemblyReport(len(fmt.empty), 0, len(fmt.empty), 0)
    total = sum(sizes) + len(fmt.tail)
    if not uris.is_remote(uris.normalize(out_uri)):
        with store.open_atomic_writer(out_uri) as out:
            for uri in shard_uris:
                with store.open_read(uri) as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            out.write(fmt.tail)
        return AssemblyReport(total, sum(sizes), 0, 0)
    parts = plan_parts(sizes, tail=fmt.tail)
    _S3Assembly(store, shard_uris, out_uri).run(parts)
    uploaded = sum(p.size for p in parts if not p.copy)
    return AssemblyReport(total, total - uploaded, uploaded, len(parts))


class _S3Assembly:
    """One multipart upload built from shard copies and small uploads; aborted on error."""

    def __init__(self, store: ObjectStore, shard_uris: Sequence[str], out_uri: str) -> None:
        self.store, self.shards, self.uri = store, shard_uris, out_uri
        self.bucket, self.key = uris.split_bucket_key(uris.normalize(out_uri))
        self.upload_id = ""

    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.store.client, method)(  # type: ignore[no-any-return]
                Bucket=self.bucket, Key=self.key, **kwargs
            )
        except botocore_errors() as exc:
            raise_store_error(store_error(operation, self.uri, exc), exc)

    def _read(self, piece: Piece) -> bytes:
        return self.store.read_range(self.shards[piece.shard], piece.start, piece.stop)

    def _part(self, number: int, part: Part) -> dict[str, Any]:
        if part.copy:
            piece = part.pieces[0]
            bucket, key = uris.split_bucket_key(uris.normalize(self.shards[piece.shard]))
            resp = self._call(
                "UploadPartCopy",
                "upload_part_copy",
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource={"Bucket": bucket, "Key": key},
                CopySourceRange=f"bytes={piece.start}-{piece.stop - 1}",
            )
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}
        body = b"".join(self._read(p) for p in part.pieces) + part.tail
        resp = self._call(
            "UploadPart", "upload_part", UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _abort(self) -> None:
        """Abort the upload while another error propagates: a failure here is only logged."""
        log.warning("aborting the assembly of %s", self.uri)
        try:
            self._call("AbortMultipartUpload", "abort_multipart_upload", UploadId=self.upload_id)
        except ObjectStoreError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self.uri, exc)

    def run(self, parts: list[Part]) -> None:
        """Upload ``parts`` and complete the object; abort the upload if anything fails."""
        self.upload_id = self._call("CreateMultipartUpload", "create_multipart_upload")["UploadId"]
        try:
            done = [self._part(n, part) for n, part in enumerate(parts, start=1)]
            self._call(
                "CompleteMultipartUpload",
                "complete_multipart_upload",
                UploadId=self.upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            self._abort()
            raise
        log.info("assembled %s from %d shards in %d parts", self.uri, len(self.shards), len(parts))
