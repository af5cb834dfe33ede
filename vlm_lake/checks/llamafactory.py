"""Checks of the LLaMA-Factory folder: tokens equal images, paths exist, sha256 matches.

The records of the shards this run wrote are read line by line (the reused shards were
checked when they were written and are counted from the manifest); every image path they
name must be a file of the folder, and each such file is read once and hashed: its
sha256 must be its name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec
from vlm_lake.store import uris
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.training.llamafactory import IMAGE_TOKEN, IMAGES_DIR
from vlm_lake.training.manifest import ExportManifest, shards_root
from vlm_lake.training.shards import shard_uri

ASSET = "training_llamafactory"
RECORD_COUNT_MATCHES = CheckSpec(
    ASSET, "record_count_matches", True, "One record per document of multimodal_lance."
)
TOKENS_MATCH_IMAGES = CheckSpec(
    ASSET, "tokens_match_images", True, "Each record has one <image> token per image path."
)
IMAGE_PATHS_EXIST = CheckSpec(
    ASSET, "image_paths_exist", True, "Every image path of a record is a file of the folder."
)
IMAGES_MATCH_SHA256 = CheckSpec(
    ASSET, "images_match_sha256", True, "Every image file read has the sha256 of its name."
)
EXCLUDED_SHARE = CheckSpec(
    ASSET,
    "excluded_share",
    True,
    "The curation policy left out at most its max_excluded_share of the documents and of "
    "the images they name.",
)
SPECS = (
    RECORD_COUNT_MATCHES,
    TOKENS_MATCH_IMAGES,
    IMAGE_PATHS_EXIST,
    IMAGES_MATCH_SHA256,
    EXCLUDED_SHARE,
)


def _records(store: ObjectStore, uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.read_bytes(uri).decode("utf-8").splitlines()]


def check_llamafactory(
    store: ObjectStore,
    folder: str,
    manifest: ExportManifest,
    expected_records: int,
    *,
    read: Collection[str] | None = None,
) -> list[CheckOutcome]:
    """Checks of one export of the folder (:data:`SPECS`, all blocking).

    Args:
        store: Where the folder is.
        folder: ``LAKE_URI/llamafactory``.
        manifest: The candidate's manifest.
        expected_records: Documents of the multimodal version exported.
        read: Names of the shards to read (default: all); the others are counted from
            the manifest.
    """
    root = shards_root(manifest.output)
    present = {o.uri.rsplit("/", 1)[-1] for o in store.list(uris.join(folder, IMAGES_DIR))}
    records = sum(s.records for s in manifest.shards if read is not None and s.name not in read)
    bad_tokens: list[dict[str, Any]] = []
    missing: list[str] = []
    named: set[str] = set()
    for shard in manifest.shards:
        if read is not None and shard.name not in read:
            continue
        for number, record in enumerate(_records(store, shard_uri(root, shard.name))):
            records += 1
            images = record["images"]
            tokens = record["messages"][0]["content"].count(IMAGE_TOKEN)
            if tokens != len(images):
                bad_tokens.append({"shard": shard.name, "record": number, "tokens": tokens})
            named.update(images)
            missing += [p for p in images if p.rsplit("/", 1)[-1] not in present]
    wrong = []
    for path in sorted(named - set(missing)):
        digest = hashlib.sha256(store.read_bytes(uris.join(folder, path))).hexdigest()
        if not path.rsplit("/", 1)[-1].startswith(digest + "."):
            wrong.append({"path": path, "sha256": digest})
    return [
        RECORD_COUNT_MATCHES.outcome(
            records == expected_records, records, f"{expected_records} records"
        ),
        TOKENS_MATCH_IMAGES.outcome(
            not bad_tokens,
            len(bad_tokens),
            "as many <image> tokens as image paths in every record read",
            {"records": bad_tokens[:MAX_EXAMPLES]},
        ),
        IMAGE_PATHS_EXIST.outcome(
            not missing,
            len(missing),
            f"every image path of the records read is one of the {len(present)} files",
            {"missing": sorted(set(missing))[:MAX_EXAMPLES]},
        ),
        IMAGES_MATCH_SHA256.outcome(
            not wrong,
            len(wrong),
            f"each of the {len(named)} images named by the records read hashes to its name",
            {"mismatches": wrong[:MAX_EXAMPLES]},
        ),
    ]
