"""A LLaMA-Factory dataset folder from ``multimodal_lance``.

``LAKE_URI/llamafactory/`` holds what ``dataset: vlm_lake`` with ``dataset_dir`` pointing at
the folder needs:

* ``images/<sha256>.<ext>``: every image once, its bytes exactly as uploaded, however
  many documents use it (the name is the content's digest, so a file never changes);
* ``vlm_lake.jsonl``: one record per document in LLaMA-Factory's multimodal sharegpt form,
  ``{"messages": [{"role": "user", "content": "<image>..." + text}, {"role": "assistant",
  "content": ""}], "images": ["images/<sha256>.jpg", ...]}``, one ``<image>`` token per
  image in slot order, as the seed's record puts the text in the instruction and leaves
  the output empty;
* ``dataset_info.json``: the ``vlm_lake`` entry (``formatting: sharegpt``, the columns and
  tags).

The data file is written like the training JSON (:mod:`vlm_lake.training.sharded_export`):
shards per fragment, reused when unchanged, assembled, with a manifest. A shard's task
writes the images its records use that are not there yet; an unchanged fragment's images
are not looked at again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.training.manifest import ExportManifest
from vlm_lake.training.sharded_export import ShardedExport, export_sharded, publish_export
from vlm_lake.training.shards import RecordFormat

DATASET_NAME = "vlm_lake"
DATA_FILE = "vlm_lake.jsonl"
IMAGES_DIR = "images"
INFO_FILE = "dataset_info.json"
IMAGE_TOKEN = "<image>"

#: File extensions by leading bytes (the stored bytes are the upload's, so is the format).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def image_extension(data: bytes) -> str:
    """The file extension of an image's bytes (``jpg``, ``png``, ``webp``...).

    Raises:
        ValueError: The bytes start like none of the formats the ingest accepts.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    raise ValueError(
        f"image bytes starting {data[:12]!r} are not JPEG, PNG, GIF, BMP, TIFF or WebP"
    )


def image_file(data: bytes) -> str:
    """The image's path in the folder: ``images/<sha256>.<ext>``."""
    return f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()}.{image_extension(data)}"


def sharegpt_record(text: str, images: list[str]) -> dict[str, Any]:
    """One document as a LLaMA-Factory sharegpt record (one token per image, slot order)."""
    return {
        "messages": [
            {"role": "user", "content": IMAGE_TOKEN * len(images) + text},
            {"role": "assistant", "content": ""},
        ],
        "images": images,
    }


def dataset_info() -> dict[str, Any]:
    """The ``dataset_info.json`` of the folder: the ``vlm_lake`` dataset."""
    return {
        DATASET_NAME: {
            "file_name": DATA_FILE,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }


@dataclass(frozen=True)
class LlamaFactoryFormat(RecordFormat):
    """JSON Lines sharegpt records; the shard's task writes the images they name.

    Attributes:
        folder: The dataset folder (``LAKE_URI/llamafactory``).
    """

    folder: str
    name = "llamafactory-sharegpt/1"
    head = separator = tail = empty = b""
    size_factor = 1.0  # a shard writes about target_bytes of images

    def encoder(self, store: ObjectStore) -> Callable[[str, list[bytes | None]], bytes]:
        """Encode a record; write each image it names that the folder does not have yet."""
        seen: set[str] = set()

        def encode(text: str, images: list[bytes | None]) -> bytes:
            paths = []
            for data in images:
                if data is None:
                    continue
                path = image_file(data)
                if path not in seen:
                    target = uris.join(self.folder, path)
                    if not store.exists(target):
                        store.write_bytes(target, data)
                    seen.add(path)
                paths.append(path)
            line = json.dumps(sharegpt_record(text, paths), ensure_ascii=False)
            return (line + "\n").encode("utf-8")

        return encode


def data_uri(folder: str) -> str:
    """The folder's data file, ``<folder>/vlm_lake.jsonl``."""
    return uris.join(folder, DATA_FILE)


def export_llamafactory(
    store: ObjectStore, multimodal_uri: str, folder: str, **options: Any
) -> ShardedExport:
    """Write the candidate data file (and the images it needs) of the folder.

    Args:
        store: Object store of the lake.
        multimodal_uri: ``multimodal.lance`` URI.
        folder: The dataset folder (``LAKE_URI/llamafactory``).
        **options: ``spark``, ``engine``, ``version``, ``target_bytes`` of
            :func:`~vlm_lake.training.sharded_export.export_sharded`.

    Returns:
        The export run; nothing is published yet (:func:`publish_llamafactory`).
    """
    return export_sharded(
        store, multimodal_uri, data_uri(folder), fmt=LlamaFactoryFormat(folder), **options
    )


def publish_llamafactory(store: ObjectStore, folder: str, manifest: ExportManifest) -> int:
    """Move the checked data file and its manifest into place; write ``dataset_info.json``.

    Returns:
        The number of stale shard files deleted.
    """
    deleted = publish_export(store, data_uri(folder), manifest)
    info = json.dumps(dataset_info(), indent=2).encode("utf-8")
    store.write_bytes(uris.join(folder, INFO_FILE), info)
    return deleted
