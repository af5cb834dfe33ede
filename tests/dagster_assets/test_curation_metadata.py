"""image_lance records how many images each quality signal flags (numbers Dagster plots)."""

from __future__ import annotations

from typing import Any

from dagster import materialize
from helpers import hard_case_images, put

from assets import ALL_ASSETS
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
