"""Exact replay: a dataset built from a manifest reads the same samples after new ingests."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import pytest
import torch
from helpers import write_published
from test_training_export import DOCS, _table
from torch.utils.data import DataLoader

from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.dataset import VLMDataset
from vlm_lake.training.manifest import read_manifest
from vlm_lake.training.replay import table_read
from vlm_lake.training.sharded_export import export_sharded


def _batches(ds: VLMDataset) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)
    loader = DataLoader(ds, batch_size=2, shuffle=True, generator=generator)
    return [(tuple(texts), images) for texts, images in loader]


def test_a_manifest_replays_the_same_batches_after_a_new_ingest(tmp_path: Path) -> None:
    uri = str(tmp_path / "multimodal.lance")
    write_published(_table(DOCS[:3]), uri, schema=multimodal_schema(3))
    before = VLMDataset(uri, image_size=32, resize="pad")
    expected = _batches(before)
    path = tmp_path / "run.manifest.json"
    path.write_text(json.dumps(before.manifest()))
    table = before.manifest()["tables"][0]
    assert (table["version"], table["tag"], table["rows"]) == (before.version, "published", 3)
    # a new ingest: two documents more, published
    grown = lance.write_dataset(_table(DOCS[3:]), uri, mode="append")
    publish.publish(uri, grown.version)
    assert len(VLMDataset(uri)) == 5
    replayed = VLMDataset.from_manifest(str(path))
    assert (len(replayed), replayed.resize, replayed.image_size) == (3, "pad", 32)
    again = _batches(replayed)
    assert [t for t, _ in again] == [t for t, _ in expected]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, expected, strict=True))


def test_a_manifest_whose_version_changed_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "multimodal.lance")
    write_published(_table(DOCS), uri, schema=multimodal_schema(3))
    manifest = VLMDataset(uri).manifest()
    manifest["tables"][0]["digest"] = "0" * 64
    with pytest.raises(ValueError, match="is not the one the manifest recorded"):
        VLMDataset.from_manifest(manifest)
    with pytest.raises(ValueError, match="is not a reader manifest"):
        VLMDataset.from_manifest({"format": "something else"})


def test_the_export_manifest_records_what_it_read(tmp_path: Path, local_store: ObjectStore) -> None:
    uri = str(tmp_path / "lake" / "multimodal.lance")
    write_published(_table(DOCS), uri, schema=multimodal_schema(3), max_rows_per_file=2)
    run = export_sharded(local_store, uri, str(tmp_path / "lake" / "training_data.json"))
    (read,) = run.manifest.tables
    expected = table_read(lance.dataset(uri), uri, "published").to_dict()
    assert read == expected and read["rows"] == 5
    run.manifest.write(local_store, str(tmp_path / "m.json"))
    assert read_manifest(local_store, str(tmp_path / "m.json")).tables == (expected,)
