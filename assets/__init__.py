"""Software-defined assets, thin wrappers over vlm_lake."""

from __future__ import annotations

from assets.ingest import image_lance, text_lance
from assets.multimodal import multimodal_lance
from assets.training import training_json

ALL_ASSETS = [image_lance, text_lance, multimodal_lance, training_json]

__all__ = ["ALL_ASSETS", "image_lance", "multimodal_lance", "text_lance", "training_json"]
