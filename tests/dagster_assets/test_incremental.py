"""New uploads after a first run: only what changed is ingested, joined and published."""

from __future__ import annotations

import json
from typing import Any

from dagster import materialize
from helpers import photo_variant, put, sha256, upload_seed_example

from assets import ALL_ASSETS
from resources import LakeResource
from vlm_lake.lake import LakeLayout
from vlm_lake.tables import lance_io, publish
from vlm_lake.training.dataset import VLMDataset


def _meta(result: Any) -> dict[str, Any]:
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def test_new_and_changed_uploads_update_only_what_changed(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    originals = upload_seed_example(s3_store.client, bucket)
    lake = s3_resources["lake"]
    resources = {
        **s3_resources,
        "lake": LakeResource(
            raw_images_uri=lake.raw_images_uri,
            raw_texts_uri=f"s3://{bucket}/Lance/data/",
            lake_uri=lake.lake_uri,
        ),
    }
    assert materialize(ALL_ASSETS, resources=resources).success
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    opts = s3_store.storage_options(layout.root)
    first_mm = lance_io.open_dataset(layout.multimodal, opts).version

    new_image2 = photo_variant(42)
    put(s3_store.client, bucket, "lanceData/image2.jpg", new_image2)  # changed
    put(s3_store.client, bucket, "lanceData/image4.png", photo_variant(43, fmt="PNG"))  # new
    new_doc = {"docid": "doc_004", "text": "a fourth one", "image_id1": "image4"}
    put(s3_store.client, bucket, "Lance/data/more.jsonl", json.dumps(new_doc).encode())

    result = materialize(ALL_ASSETS, resources=resources)
    assert result.success
    meta = _meta(result)
    image = meta["image_lance"]
    assert (image["inserted"], image["updated"], image["unchanged"]) == (1, 1, 2)
    assert image["downloaded_bytes"] == len(new_image2) + len(photo_variant(43, fmt="PNG"))
    text = meta["text_lance"]
    assert (text["inserted"], text["updated"], text["unchanged"]) == (1, 0, 3)
    mm = meta["multimodal_lance"]
    # doc_001 and doc_003 reference image2, doc_004 is new; doc_002 is left alone
    assert mm["full_rebuild"] is False and mm["rows_written"] == 3
    assert mm["lance/published_version"] == mm["lance/version"] > first_mm
    assert meta["training_json"]["dagster/row_count"] == 4

    rows = {
        r["docid"]: r for r in lance_io.open_dataset(layout.multimodal, opts).to_table().to_pylist()
    }
    assert set(rows) == {"doc_001", "doc_002", "doc_003", "doc_004"}
    assert rows["doc_001"]["image2"] == new_image2  # image_id2 of doc_001 is image2
    assert rows["doc_002"]["image2"] == originals["image1"]
    assert sha256(rows["doc_004"]["image1"]) == sha256(photo_variant(43, fmt="PNG"))
    records = json.loads(s3_store.read_bytes(layout.training_json))
    assert len(records) == 4
    assert len(VLMDataset(layout.multimodal, opts)) == 4

    # a third run with nothing new commits nothing anywhere
    again = _meta(materialize(ALL_ASSETS, resources=resources))
    for key in ("image_lance", "text_lance", "multimodal_lance"):
        assert again[key]["committed"] is False
    assert publish.published(layout.multimodal, opts).version == mm["lance/version"]


def test_image_ingest_on_spark_through_the_asset(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    """engine='spark' in the run config: tasks download and write, the checks pass."""
    upload_seed_example(s3_store.client, bucket)
    put(s3_store.client, bucket, "lanceData/image4.png", photo_variant(44, fmt="PNG"))
    config = {"ops": {"ingest_images": {"config": {"engine": "spark"}}}}
    result = materialize(
        ALL_ASSETS, resources=s3_resources, selection="image_lance", run_config=config
    )
    assert result.success
    image = _meta(result)["image_lance"]
    assert image["spark_tasks"] >= 1 and image["inserted"] == 4
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    opts = s3_store.storage_options(layout.root)
    assert publish.published(layout.images, opts).version == image["lance/version"]
