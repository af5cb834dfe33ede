"""Data checks with evidence, one module per table; each check is declared once in a spec.

The check functions are re-exported here (``from vlm_lake import checks``;
``checks.check_images(ds)``), and :data:`SPECS` lists every check of every asset: the
Dagster check specs are built from it.
"""

from __future__ import annotations

from vlm_lake.checks import (
    curation,
    features,
    images,
    llamafactory,
    multimodal,
    texts,
    training_json,
)
from vlm_lake.checks.features import check_features
from vlm_lake.checks.images import check_images
from vlm_lake.checks.multimodal import check_multimodal
from vlm_lake.checks.spec import CheckOutcome, CheckSpec, blocking_failures
from vlm_lake.checks.texts import check_texts
from vlm_lake.checks.training_json import check_training_json

#: Every declared check, by the asset it guards.
SPECS: dict[str, tuple[CheckSpec, ...]] = {
    module.SPECS[0].asset: module.SPECS
    for module in (images, texts, multimodal, features, training_json, llamafactory, curation)
}

__all__ = [
    "SPECS",
    "CheckOutcome",
    "CheckSpec",
    "blocking_failures",
    "check_features",
    "check_images",
    "check_multimodal",
    "check_texts",
    "check_training_json",
]
