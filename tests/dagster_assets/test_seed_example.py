"""The seed's example, exactly, materialized as Dagster assets against the S3 test server."""

from __future__ import annotations

import json
from typing import Any

import torch
from dagster import materialize
from helpers import sha256, upload_seed_example
from torch.utils.data import DataLoader

from assets import ALL_ASSETS
from vlm_lake.lake import LakeLayout
from vlm_lake.tables import lance_io
from vlm_lake.training.dataset import VLMDataset


def test_seed_example_end_to_end(s3_resources: dict[str, Any], s3_store, bucket: str) -> None:
    originals = upload_seed_example(s3_store.client, bucket)

    result = materialize(ALL_ASSETS, resources=s3_resources)
    assert result.success

    layout = LakeLayout.at(f"s3://{bucket}/lake")
    opts = s3_store.storage_options(layout.root)

    # images.lance: bytes exactly as uploaded
    images = lance_io.open_dataset(layout.images, opts).to_table().to_pylist()
    assert sorted(r["image_id"] for r in images) == ["image1", "image2", "image3"]
    for row in images:
        assert sha256(row["image_data"]) == sha256(originals[row["image_id"]]) == row["sha256"]
        assert row["format"] == "jpeg"
        assert row["source_uri"] == f"s3://{bucket}/lanceData/{row['image_id']}.jpg"

    # texts.lance and multimodal.lance
    mm = lance_io.open_dataset(layout.multimodal, opts).to_table().to_pylist()
    assert [r["docid"] for r in mm] == ["doc_001", "doc_002", "doc_003"]
    counts = {r["docid"]: sum(r[f"image{k}"] is not None for k in (1, 2, 3)) for r in mm}
    assert counts == {"doc_001": 2, "doc_002": 2, "doc_003": 3}
    expected_refs = {
        "doc_001": ["image1", "image2"],
        "doc_002": ["image3", "image1"],
        "doc_003": ["image2", "image1", "image3"],
    }
    for row in mm:
        for k, ref in enumerate(expected_refs[row["docid"]], start=1):
            assert sha256(row[f"image{k}"]) == sha256(originals[ref])

    # one DataLoader batch: [3, 3, 3, 224, 224], zeros exactly where a 3rd image is missing
    dataset = VLMDataset(layout.multimodal, storage_options=opts)
    texts, batch = next(iter(DataLoader(dataset, batch_size=8)))
    assert batch.shape == torch.Size([3, 3, 3, 224, 224])
    assert batch.dtype == torch.float32
    nonzero = (batch.flatten(2).abs().sum(-1) > 0).tolist()
    assert nonzero == [[True, True, False], [True, True, False], [True, True, True]]
    assert list(texts) == [
        "This is a prompt for image processing.",
        "Another prompt with image references.",
        "Interesting dialogue about images.",
    ]
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0

    # training_data.json: hex decodes to the original bytes, in slot order
    records = json.loads(s3_store.read_bytes(layout.training_json))
    assert len(records) == 3
    for record, docid in zip(records, ["doc_001", "doc_002", "doc_003"], strict=True):
        assert record["output"] == ""
        decoded = [bytes.fromhex(h) for h in record["input"]]
        assert decoded == [originals[ref] for ref in expected_refs[docid]]

    # metadata on every materialization: rows, version, URI, schema, preview
    by_key = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    for key, rows in (("image_lance", 3), ("text_lance", 3), ("multimodal_lance", 3)):
        meta = by_key[key]
        assert meta["dagster/row_count"].value == rows
        # version 2: the rows, then the key index (an overwrite drops indices)
        assert meta["lance/version"].value == 2
        assert meta["dagster/uri"].value.startswith(f"s3://{bucket}/lake/")
        assert meta["dagster/column_schema"].schema.columns
        assert "bytes>" in meta["preview"].value or key == "text_lance"
        assert meta["published"].value is True
        assert meta["lance/published_version"].value == 2
    assert by_key["training_json"]["dagster/row_count"].value == 3
    assert "ffd8ffe0" in by_key["training_json"]["preview"].value  # JPEG magic, hex
    assert by_key["multimodal_lance"]["dangling_references"].value == 0
    assert by_key["training_json"]["published"].value is True
    assert not s3_store.exists(layout.training_json + ".candidate")  # promoted, not copied
    # the default curation policy excludes nothing: an empty table, every record exported
    assert by_key["curation"]["dagster/row_count"].value == 0
    assert by_key["curation"]["images_excluded"].value == 0
    assert by_key["training_json"]["excluded_documents"].value == 0
    assert by_key["training_json"]["excluded_images"].value == 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 25
    # random-init weights make the three photos' features alike: the one (WARN) failure
    failed = [(c.asset_key.to_user_string(), c.check_name) for c in checks if not c.passed]
    assert failed == [("image_features", "near_duplicate_images")]
    for check in checks:  # every check carries its evidence
        assert {"observed", "expected"} <= set(check.metadata)
    # no credential in any metadata value
    secret = s3_resources["object_store"].aws_secret_access_key
    assert all(secret not in str(v.value) for meta in by_key.values() for v in meta.values())


def test_rematerialize_without_change_commits_nothing(
    s3_resources: dict[str, Any], s3_store, bucket
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    second = materialize(ALL_ASSETS, resources=s3_resources)
    assert second.success
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in second.get_asset_materialization_events()
    }
    for key in ("image_lance", "text_lance", "multimodal_lance"):
        assert meta[key]["committed"].value is False
        assert meta[key]["lance/version"].value == 2
    assert meta["image_lance"]["unchanged"].value == 3
    assert meta["image_lance"]["downloaded_bytes"].value == 0
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    opts = s3_store.storage_options(layout.root)
    for uri in (layout.images, layout.texts, layout.multimodal):
        ds = lance_io.open_dataset(uri, opts)
        assert ds.version == 2
        assert ds.count_rows() == 3
