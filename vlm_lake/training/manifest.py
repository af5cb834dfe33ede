"""The training export's manifest: which shards make the file, and where they came from.

``training_data.manifest.json`` sits beside ``training_data.json``: the source table and
its Lance version, the file's records, images and bytes, and every shard in file order
with its fragment, rows, bytes and sha256 and the version of the export that wrote it. The
candidate's manifest is written beside the candidate and promoted with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlm_lake.store.object_store import ObjectStore
from vlm_lake.training.shards import SHARD_FORMAT, ShardInfo

#: Identifies the manifest's layout.
MANIFEST_FORMAT = "vlm-lake/training-json-manifest/1"


def _stem(out_uri: str) -> str:
    for suffix in (".jsonl", ".json"):
        if out_uri.endswith(suffix):
            return out_uri[: -len(suffix)]
    return out_uri


def manifest_uri(out_uri: str) -> str:
    """``training_data.json`` -> ``training_data.manifest.json`` (``.jsonl`` likewise)."""
    return _stem(out_uri) + ".manifest.json"


def shards_root(out_uri: str) -> str:
    """``training_data.json`` -> ``training_data.shards/`` (the shards' folder)."""
    return _stem(out_uri) + ".shards/"


@dataclass(frozen=True)
class ExportManifest:
    """A training export: the source version and its shards in file order.

    Attributes:
        output: The published file's URI.
        source_uri: ``multimodal.lance`` URI.
        source_version: The Lance version exported.
        records: Records in the file (documents of that version).
        images: Images in the file.
        bytes: Size of the file.
        shard_format: The record format of the shards.
        shards: The shards, in file order.
        created_at: When the export ran (UTC, ISO 8601).
        tables: What the export read (:class:`~vlm_lake.training.replay.TableRead`
            entries: URI, version, tag, rows, digest).
        curation: The curation applied (version, excluded ids, digest); empty: none.
    """

    output: str
    source_uri: str
    source_version: int
    records: int
    images: int
    bytes: int
    shard_format: str
    shards: tuple[ShardInfo, ...]
    created_at: str
    tables: tuple[dict[str, Any], ...] = ()
    curation: dict[str, Any] = field(default_factory=dict)

    @property
    def excluded_documents(self) -> int:
        """Documents of the source version the curation policy left out."""
        return sum(s.excluded_documents for s in self.shards)

    @property
    def excluded_images(self) -> int:
        """Images left out of the records they belong to."""
        return sum(s.excluded_images for s in self.shards)

    @classmethod
    def build(
        cls,
        output: str,
        source_uri: str,
        source_version: int,
        expected_records: int,
        shards: Sequence[ShardInfo],
        size: int,
        shard_format: str = SHARD_FORMAT,
        tables: Sequence[dict[str, Any]] = (),
        curation: dict[str, Any] | None = None,
    ) -> ExportManifest:
        """The manifest of an export; checks that the shards hold every document once.

        Raises:
            RuntimeError: The shards hold (or left out) another number of records than the
                version has documents.
        """
        records = sum(s.records for s in shards)
        left_out = sum(s.excluded_documents for s in shards)
        if records + left_out != expected_records:
            raise RuntimeError(
                f"the shards of {source_uri!r} version {source_version} hold {records} "
                f"records (and left out {left_out}) for {expected_records} documents; "
                "nothing was published"
            )
        return cls(
            output,
            source_uri,
            source_version,
            records,
            sum(s.images for s in shards),
            size,
            shard_format,
            tuple(shards),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            tuple(tables),
            dict(curation or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "format": MANIFEST_FORMAT,
            "output": self.output,
            "source": {"uri": self.source_uri, "version": self.source_version},
            "records": self.records,
            "images": self.images,
            "bytes": self.bytes,
            "shard_format": self.shard_format,
            "created_at": self.created_at,
            "tables": list(self.tables),
            "curation": self.curation,
            "shards": [s.to_dict() for s in self.shards],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ExportManifest:
        """Parse :meth:`to_dict`'s document.

        Raises:
            ValueError: Another format.
        """
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"format={doc.get('format')!r} is not a training export manifest; "
                f"expected {MANIFEST_FORMAT!r}"
            )
        return cls(
            doc["output"],
            doc["source"]["uri"],
            int(doc["source"]["version"]),
            int(doc["records"]),
            int(doc["images"]),
            int(doc["bytes"]),
            doc["shard_format"],
            tuple(ShardInfo(**s) for s in doc["shards"]),
            doc["created_at"],
            tuple(doc.get("tables", ())),
            dict(doc.get("curation") or {}),
        )

    def write(self, store: ObjectStore, uri: str) -> None:
        """Write the manifest (atomically) to ``uri``."""
        store.write_bytes(uri, json.dumps(self.to_dict(), indent=1).encode("utf-8"))


def read_manifest(store: ObjectStore, uri: str) -> ExportManifest | None:
    """The manifest at ``uri``, or None when there is none.

    Raises:
        ValueError: The file is not a manifest of this format.
    """
    try:
        data = store.read_bytes(uri)
    except FileNotFoundError:  # ObjectNotFoundError is one too
        return None
    return ExportManifest.from_dict(json.loads(data))
