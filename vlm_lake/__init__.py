"""vlm_lake: the framework-free core of the multimodal lake (no Dagster in here).

``VLMDataset`` is imported lazily so that ``import vlm_lake`` does not load PyTorch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VLMDataset"]


def __getattr__(name: str) -> Any:
    if name == "VLMDataset":
        from vlm_lake.training.dataset import VLMDataset

        return VLMDataset
    raise AttributeError(f"module 'vlm_lake' has no attribute {name!r}")
