"""Checks of ``image_features`` against the ``image_lance`` version it was computed from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec, duplicates
from vlm_lake.tables import lance_io, reads

#: Up to this many rows the near-duplicate check compares every pair; above it, only the
#: rows a run computed against all rows (an all-pairs pass costs rows^2 x 2048 x 2 flops).

ONE_ROW_PER_IMAGE = CheckSpec(
    "image_features",
    "one_row_per_image",
    True,
    "One row per image of image_lance, with its current sha256.",
)
FEATURES_FINITE = CheckSpec(
    "image_features", "features_finite", True, "No NaN or infinite value in any feature vector."
)
SINGLE_MODEL = CheckSpec(
    "image_features", "single_model", True, "Every row computed by this run's model and weights."
)
#: Cosine similarity from which two images count as near-duplicates.
NEAR_DUPLICATE_COSINE = 0.98
NEAR_DUPLICATE_IMAGES = CheckSpec(
    "image_features",
    "near_duplicate_images",
    False,
    f"Image pairs whose features have cosine similarity >= {NEAR_DUPLICATE_COSINE}.",
    threshold=NEAR_DUPLICATE_COSINE,
)
SPECS = (ONE_ROW_PER_IMAGE, FEATURES_FINITE, SINGLE_MODEL, NEAR_DUPLICATE_IMAGES)


def check_features(
    ds: Any,
    images: Any,
    *,
    model: str,
    weights: str,
    random_init: bool,
    threshold: float = NEAR_DUPLICATE_COSINE,
    batch_rows: int = 1024,
    storage: dict[str, str] | None = None,
    spark: Callable[[], Any] | None = None,
) -> list[CheckOutcome]:
    """Checks of one ``image_features`` version (:data:`SPECS`).

    Args:
        ds: The features, opened at the candidate version.
        images: ``image_lance`` at the version the features were computed from.
        model: The model name every row must carry.
        weights: The weights identity every row must carry.
        random_init: Whether the weights are random (said in the near-duplicate evidence).
        threshold: Cosine similarity from which a pair is a near-duplicate.
        batch_rows: Rows per read while scanning the vectors.
        storage: Lance storage options of ``ds`` (for the near-duplicate tasks).
        spark: Returns a SparkSession: with a vector index, every image's near-duplicate
            query runs in Spark tasks (see :mod:`vlm_lake.features.index_duplicates`).

    Returns:
        ``one_row_per_image``, ``features_finite`` and ``single_model`` (blocking) and
        ``near_duplicate_images`` (warning).
    """
    table = ds.to_table(columns=["image_id", "image_sha256", "model", "weights"])
    identities = Counter(
        zip(table.column("model").to_pylist(), table.column("weights").to_pylist(), strict=True)
    )
    others = {f"{m} | {w}": n for (m, w), n in identities.items() if (m, w) != (model, weights)}
    return [
        _one_row_per_image(table, images),
        _features_finite(ds, batch_rows),
        SINGLE_MODEL.outcome(
            not others,
            len(others),
            f"every row computed by {model} with weights {weights}",
            {"other_models": others},
        ),
        _near_duplicates(ds, random_init, threshold, storage, spark),
    ]


def _one_row_per_image(table: Any, images: Any) -> CheckOutcome:
    want = lance_io.column_map(images, "image_id", "sha256")
    ids = table.column("image_id").to_pylist()
    have = dict(zip(ids, table.column("image_sha256").to_pylist(), strict=True))
    dups = duplicates(ids)
    missing = sorted(want.keys() - have.keys())
    extra = sorted(have.keys() - want.keys())
    stale = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    observed = {
        "rows": len(ids),
        "images": len(want),
        "missing": len(missing),
        "extra": len(extra),
        "stale": len(stale),
        "duplicated": len(dups),
    }
    return ONE_ROW_PER_IMAGE.outcome(
        len(missing) + len(extra) + len(stale) + len(dups) == 0,
        observed,
        f"exactly one row per image of image_lance ({len(want)}), each with the image's "
        "current sha256",
        {
            "missing": missing[:MAX_EXAMPLES],
            "extra": extra[:MAX_EXAMPLES],
            "stale": stale[:MAX_EXAMPLES],
            "duplicated": sorted(dups)[:MAX_EXAMPLES],
        },
    )


def _features_finite(ds: Any, batch_rows: int) -> CheckOutcome:
    bad: list[str] = []
    for batch in reads.read_ranges(ds, ["image_id", "features"], batch_rows):
        values = batch.column("features").flatten().to_numpy(zero_copy_only=False)
        finite = np.isfinite(values.reshape(batch.num_rows, -1)).all(axis=1)
        if not finite.all():
            batch_ids = batch.column("image_id").to_pylist()
            bad += [i for i, ok in zip(batch_ids, finite, strict=True) if not ok]
    return FEATURES_FINITE.outcome(
        not bad,
        len(bad),
        "0 feature vectors with NaN or infinite values",
        {"image_ids": bad[:MAX_EXAMPLES]},
    )


def _near_duplicates(
    ds: Any,
    random_init: bool,
    threshold: float,
    storage: dict[str, str] | None,
    spark: Callable[[], Any] | None,
) -> CheckOutcome:
    """All pairs without a vector index (small tables: exact); else every image via it."""
    from vlm_lake.features.index_duplicates import NEIGHBOURS, index_near_duplicates
    from vlm_lake.features.near_duplicates import near_duplicate_pairs
    from vlm_lake.features.vector_index import has_vector_index

    if has_vector_index(ds, "features"):
        found = index_near_duplicates(ds, threshold=threshold, storage=storage, spark=spark)
        scope = (
            f"every one of {found.rows} images against its {NEIGHBOURS - 1} nearest through "
            "the vector index (exact cosine on the candidates)"
        )
    else:
        found = near_duplicate_pairs(ds, threshold=threshold)
        scope = f"all pairs of {found.rows} images"
    details: dict[str, Any] = {
        "compared": scope,
        "pairs": [{"image_a": a, "image_b": b, "cosine": c} for a, b, c in found.examples],
    }
    if random_init:
        details["note"] = (
            "weights are random-init: random features make every pair of images look alike, "
            "so this check only means something with trained weights (RESNET50_WEIGHTS)"
        )
    return NEAR_DUPLICATE_IMAGES.outcome(
        found.count == 0,
        found.count,
        f"no two images with feature cosine similarity >= {threshold} ({scope})",
        details,
    )
