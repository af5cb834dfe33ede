"""Software-defined assets, thin wrappers over vlm_lake."""

from __future__ import annotations

from assets.curation import curation
from assets.features import image_features
from assets.ingest import ingest_images_asset, ingest_texts_asset
from assets.llamafactory import training_llamafactory
from assets.multimodal import multimodal_lance
from assets.training import training_json

ALL_ASSETS = [
    ingest_images_asset,
    ingest_texts_asset,
    multimodal_lance,
    training_json,
    training_llamafactory,
    image_features,
    curation,
]

__all__ = [
    "ALL_ASSETS",
    "curation",
    "image_features",
    "ingest_images_asset",
    "ingest_texts_asset",
    "multimodal_lance",
    "training_json",
    "training_llamafactory",
]
