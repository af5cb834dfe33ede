"""Streamed S3 uploads: writes buffered into parts of a multipart upload."""

from __future__ import annotations

import io
import logging
from typing import Any

from vlm_lake.store.errors import (
    ObjectStoreError,
    botocore_errors,
    raise_store_error,
    store_error,
)

log = logging.getLogger(__name__)

#: Multipart part size for streamed uploads; S3 needs at least 5 MiB per part but the last.
PART_SIZE = 8 * 1024 * 1024


class MultipartWriter(io.RawIOBase):
    """Buffer writes into parts of ``PART_SIZE`` and upload them as an S3 multipart upload."""

    def __init__(self, client: Any, bucket: str, key: str, uri: str) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._uri = client, bucket, key, uri
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        """Always True: this is a write-only stream."""
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        """Buffer ``b``; upload a part whenever a whole part is buffered."""
        self._buf += b
        while len(self._buf) >= PART_SIZE:
            self._upload_part(bytes(self._buf[:PART_SIZE]))
            del self._buf[:PART_SIZE]
        return len(b)

    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """Call one S3 operation (boto3 retries it); a final failure names the URI."""
        try:
            return getattr(self._client, method)(  # type: ignore[no-any-return]
                Bucket=self._bucket, Key=self._key, **kwargs
            )
        except botocore_errors() as exc:
            raise_store_error(store_error(operation, self._uri, exc), exc)

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            resp = self._call("CreateMultipartUpload", "create_multipart_upload")
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = self._call(
            "UploadPart", "upload_part", UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def finish(self) -> None:
        """Upload what is left and complete the upload (a plain PUT if it fits one part)."""
        if self._upload_id is None:
            self._call("PutObject", "put_object", Body=bytes(self._buf))
            return
        if self._buf:
            self._upload_part(bytes(self._buf))
            self._buf.clear()
        self._call(
            "CompleteMultipartUpload",
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Abort the multipart upload, if one was started.

        Called while another error propagates, so a failure to abort is logged, not raised:
        it must not hide the error that made the write fail. A bucket lifecycle rule
        (``AbortIncompleteMultipartUpload``) cleans up what is left.
        """
        if self._upload_id is None:
            return
        log.warning("aborting multipart upload of %s", self._uri)
        try:
            self._call("AbortMultipartUpload", "abort_multipart_upload", UploadId=self._upload_id)
        except ObjectStoreError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self._uri, exc)
