"""image_lance records how many images each quality signal flags (numbers Dagster plots)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dagster import materialize
from helpers import CAPTION, hard_case_documents, hard_case_images, put

from assets import ALL_ASSETS
from resources import LakeResource
from vlm_lake.curation.image_report import FLAGS


def test_image_lance_metadata_counts_the_flagged_hard_cases(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    for name, data in hard_case_images().items():
        put(s3_store.client, bucket, f"lanceData/{name}.jpg", data)
    result = materialize(ALL_ASSETS, resources=s3_resources, selection=["image_lance"])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    counts = {flag: meta[f"images_{flag}"] for flag in FLAGS}
    # blurred (blur < 50 on the 64x64 thumbnail): grey 0, almost black 3, the 16x16 one
    # 22, the Gaussian-blurred one 34; small: the 16x16 one
    assert counts == {
        "flat": 2,  # the grey image, and the almost-black one (all within 4 levels)
        "dark": 1,
        "bright": 0,
        "blurred": 4,
        "small": 1,
        "without_signals": 0,
    }
    # the perceptual-duplicates check warns with the one cluster, its kept image first
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    dup = checks["perceptual_duplicates"]
    assert not dup.passed and dup.severity.value == "WARN"
    (cluster,) = dup.metadata["clusters"].value
    assert cluster["size"] == 8 and cluster["kept"] == "almost_black"  # first 451x300 row
    assert set(cluster["duplicates"]) == {
        "blurred",
        "cropped",
        "exif_rotated",
        "original",
        "requality",
        "resized",
        "tiny",
    }
    assert result.success  # a warning does not stop publication


POLICY = {
    "min_blur": 50.0,
    "max_flat_share": 0.95,
    "min_luma_mean": 0.1,
    "min_short_side": 64,
    "image_duplicates": "perceptual",
    "min_text_length": 10,
    "drop_near_duplicate_texts": True,
    "max_excluded_share": 0.7,
}
SELECTION = [
    "image_lance",
    "text_lance",
    "multimodal_lance",
    "curation",
    "training_json",
    "training_llamafactory",
]


def _upload_hard_cases(s3_store: Any, bucket: str) -> None:
    for name, data in hard_case_images().items():
        put(s3_store.client, bucket, f"lanceData/{name}.jpg", data)
    docs = json.dumps(hard_case_documents()).encode()
    put(s3_store.client, bucket, "Lance/data/testdata.json", docs)


def _metadata(result: Any) -> dict[str, dict[str, Any]]:
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def test_a_policy_run_excludes_with_reasons_and_shows_thumbnails(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    _upload_hard_cases(s3_store, bucket)
    config = {"ops": {"curation": {"config": POLICY}}}
    result = materialize(ALL_ASSETS, resources=s3_resources, selection=SELECTION, run_config=config)
    assert result.success
    meta = _metadata(result)
    cur = meta["curation"]
    # 8 of 10 images: every copy of the photo but the kept one, and the grey image
    assert (cur["images_excluded"], cur["documents_excluded"]) == (8, 2)
    assert cur["excluded/image/perceptual_duplicate"] == 7
    assert cur["excluded/document/near_duplicate_text"] == 1
    assert cur["exclusions"].count("perceptual_duplicate") == 7
    # thumbnails: one row per rule, each a JPEG data URI
    gallery = cur["excluded_images"]
    assert gallery.count("](data:image/jpeg;base64,") >= 8
    assert "**min_blur**" in gallery and "tiny: 16" in gallery
    images = meta["image_lance"]
    assert images["new_images"].count("data:image/jpeg;base64,") == 10
    assert "kept: almost_black" in images["largest_clusters"]
    # the exports leave out the 2 documents and the excluded images of the others
    records = json.loads(s3_store.read_bytes(f"s3://{bucket}/lake/training_data.json"))
    assert [r["instruction"] for r in records] == [CAPTION, hard_case_documents()[3]["text"]]
    kept = {k: v.hex() for k, v in hard_case_images().items()}
    assert records[0]["input"] == [kept["other_photo"]]  # "original" is a duplicate
    assert records[1]["input"] == []  # the grey image fails min_blur
    assert meta["training_json"]["excluded_documents"] == 2
    assert meta["training_llamafactory"]["excluded_images"] == 2
    checks = {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }
    share = checks[("training_json", "excluded_share")]
    assert share.passed and share.metadata["observed"].value == {"documents": 0.5, "images": 0.6667}
    # the distribution warnings: 4 blurred of 10 is unusual
    dist = checks[("curation", "image_signal_distribution")]
    assert not dist.passed and dist.severity.value == "WARN"
    assert dist.metadata["observed"].value["unusual"] == {"blurred": 4}


def test_an_export_excluding_more_than_the_allowed_share_is_not_published(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    _upload_hard_cases(s3_store, bucket)
    strict = {"ops": {"curation": {"config": POLICY | {"max_excluded_share": 0.4}}}}
    result = materialize(
        ALL_ASSETS,
        resources=s3_resources,
        selection=SELECTION,
        run_config=strict,
        raise_on_error=False,
    )
    meta = _metadata(result)
    assert meta["training_json"]["published"] is False
    assert meta["training_llamafactory"]["published"] is False
    assert not s3_store.exists(f"s3://{bucket}/lake/training_data.json")
    checks = {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }
    assert not checks[("training_json", "excluded_share")].passed
    assert checks[("training_json", "excluded_share")].severity.value == "ERROR"


def test_the_lake_policy_applies_and_a_run_overrides_it_field_by_field(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    _upload_hard_cases(s3_store, bucket)
    policy = {"min_blur": 50, "image_duplicates": "perceptual", "min_text_length": 10}
    put(s3_store.client, bucket, "config/policy.json", json.dumps(policy).encode())
    seed = s3_resources["lake"]
    lake = LakeResource(
        raw_images_uri=seed.raw_images_uri,
        raw_texts_uri=seed.raw_texts_uri,
        lake_uri=seed.lake_uri,
        curation_policy=f"s3://{bucket}/config/policy.json",
    )
    resources = s3_resources | {"lake": lake}
    selection = ["image_lance", "text_lance", "curation"]
    # a run started by a sensor or automation: no run config, the lake's policy
    result = materialize(ALL_ASSETS, resources=resources, selection=selection)
    cur = _metadata(result)["curation"]
    assert cur["policy"]["min_blur"] == 50 and cur["policy"]["image_duplicates"] == "perceptual"
    assert (cur["images_excluded"], cur["documents_excluded"]) == (8, 1)
    # one run turns the duplicates off and keeps the file's other fields
    config = {"ops": {"curation": {"config": {"image_duplicates": "none"}}}}
    result = materialize(ALL_ASSETS, resources=resources, selection=["curation"], run_config=config)
    cur = _metadata(result)["curation"]
    assert cur["policy"]["image_duplicates"] == "none" and cur["policy"]["min_blur"] == 50
    assert cur["images_excluded"] == 4  # the 4 images under min_blur
    # a broken policy file stops the run with a message naming it
    put(s3_store.client, bucket, "config/policy.json", b'{"min_blurr": 50}')
    with pytest.raises(ValueError, match=r"CURATION_POLICY file .*policy.json.*min_blurr"):
        materialize(ALL_ASSETS, resources=resources, selection=["curation"])


def test_the_run_config_offers_every_policy_field() -> None:
    """CurationConfig repeats CurationPolicy's fields for the launchpad: the two stay equal."""
    from dataclasses import fields

    from assets.curation import CurationConfig
    from vlm_lake.curation.policy import CurationPolicy

    assert set(CurationConfig.model_fields) == {f.name for f in fields(CurationPolicy)}
