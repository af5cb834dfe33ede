"""The curation asset: the policy in run config -> ``curation.lance``, with pictures.

The training exports read its published version and leave out what it lists
(``assets/training.py``, ``assets/llamafactory.py``). The default config sets no rule: the
table is empty and the exports hold every document and image.
"""

# No `from __future__ import annotations` here: Dagster checks the `context` annotation
# by identity, and a string annotation fails that check.

import json
from typing import Any

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.automation import FOLLOW_UPSTREAM
from assets.gallery import excluded_gallery
from assets.gate import check_specs, checked_lance_result
from assets.ingest import GROUP
from assets.metadata import markdown_table
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.spark import SparkResource
from vlm_lake.checks.curation import check_curation
from vlm_lake.curation.policy import CurationPolicy, parse_policy
from vlm_lake.curation.table import CurationRun, build_curation
from vlm_lake.features.index_duplicates import index_pairs
from vlm_lake.tables import lance_io, publish

_LAKE = "Unset: the lake's policy (CURATION_POLICY), else off."


class CurationConfig(Config):
    """One run's curation policy (set it in the launchpad), field by field.

    A field left unset takes the lake's policy (``CURATION_POLICY``), where every rule is
    off by default; a field set here overrides it for this run.
    """

    min_blur: float | None = Field(
        None,
        description=f"Exclude images whose blur (variance "
        f"of the Laplacian) is below this, e.g. 50. {_LAKE}",
    )
    max_flat_share: float | None = Field(
        None, description=f"Exclude images with a larger share of flat pixels, e.g. 0.95. {_LAKE}"
    )
    min_luma_mean: float | None = Field(
        None, description=f"Exclude images darker on average (0..1), e.g. 0.1. {_LAKE}"
    )
    max_luma_mean: float | None = Field(
        None, description=f"Exclude images brighter on average (0..1), e.g. 0.9. {_LAKE}"
    )
    max_dark_share: float | None = Field(
        None, description=f"Exclude images with a larger share of near-black pixels. {_LAKE}"
    )
    max_bright_share: float | None = Field(
        None, description=f"Exclude images with a larger share of near-white pixels. {_LAKE}"
    )
    min_short_side: int | None = Field(
        None, description=f"Exclude images whose shorter side has fewer pixels, e.g. 64. {_LAKE}"
    )
    max_aspect_ratio: float | None = Field(
        None, description=f"Exclude images longer than this on either side (>= 1), e.g. 4. {_LAKE}"
    )
    min_text_length: int | None = Field(
        None, description=f"Exclude documents with fewer characters. {_LAKE}"
    )
    max_text_length: int | None = Field(
        None, description=f"Exclude documents with more characters. {_LAKE}"
    )
    image_duplicates: str | None = Field(
        None,
        description="Drop duplicate images up to this "
        "level, keeping one per cluster: 'none', 'exact' (same "
        "sha256), 'perceptual' (phash within phash_max_bits) "
        "or 'semantic' (ResNet-50 feature cosine >= "
        f"semantic_min_cosine; needs image_features). {_LAKE}",
    )
    phash_max_bits: int | None = Field(
        None,
        description=f"Largest phash distance of perceptual duplicates, 0..32 (default 6). {_LAKE}",
    )
    semantic_min_cosine: float | None = Field(
        None,
        description="Least feature cosine of "
        "semantic duplicates, in (0, 1] (default 0.97). "
        f"{_LAKE}",
    )
    drop_near_duplicate_texts: bool | None = Field(
        None,
        description="Cluster documents whose MinHash Jaccard estimate with another reaches "
        f"text_min_jaccard and drop all but the first of each cluster. {_LAKE}",
    )
    text_min_jaccard: float | None = Field(
        None,
        description="Least estimated Jaccard "
        "similarity of near-duplicate texts, in (0, 1] "
        f"(default 0.7). {_LAKE}",
    )
    max_excluded_share: float | None = Field(
        None,
        description="A training export that leaves "
        "out more than this share of its documents, or of "
        "their images, is not published (blocking check; "
        f"default 0.5). {_LAKE}",
    )

    def policy(self, base: CurationPolicy) -> CurationPolicy:
        """``base`` (the lake's policy) with the fields this run sets (range-checked)."""
        return base.with_overrides(self.model_dump())


def _semantic_pairs(
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
    policy: CurationPolicy,
) -> Any:
    uri = lake.layout().image_features
    storage = object_store.storage_options(uri)

    def pairs() -> list[tuple[str, str, float]]:
        ds = publish.open_published(uri, storage)  # raises, naming the asset, if absent
        return index_pairs(
            ds,
            threshold=policy.semantic_min_cosine,
            storage=storage,
            spark=lambda: spark.spark_session,
        )

    return pairs


def _run_metadata(run: CurationRun, rows: list[dict[str, Any]]) -> dict[str, Any]:
    images, documents = run.totals["images"], run.totals["documents"]
    return {
        "policy": MetadataValue.json(json.loads(run.policy.to_json())),
        "images_excluded": run.excluded_images,
        "documents_excluded": run.excluded_documents,
        "images_excluded_share": round(run.excluded_images / images, 4) if images else 0.0,
        "documents_excluded_share": round(run.excluded_documents / documents, 4)
        if documents
        else 0.0,
        **{f"excluded/{rule}": n for rule, n in sorted(run.by_rule.items())},
        "exclusions": MetadataValue.md(
            markdown_table(rows[:50], max_chars=80) if rows else "nothing excluded"
        ),
        "image_lance_version": run.totals["image_version"],
        "text_lance_version": run.totals["text_version"],
    }


@asset(
    automation_condition=FOLLOW_UPSTREAM,
    group_name=GROUP,
    # image_features is read only for semantic duplicates; not a dependency, so a failed
    # feature run never holds back the exports of a policy that does not use it
    deps=["image_lance", "text_lance"],
    kinds={"lance", "python"},
    check_specs=check_specs("curation"),
    description="The curation policy (run config) applied to the published images and texts: "
    "one row per excluded image or document and rule, with the measured value and the "
    "threshold (and, for duplicates, the one its cluster keeps). The training exports leave "
    "these rows out. Default policy: nothing excluded. Thumbnails of the excluded images in "
    "the metadata. LAKE_URI/curation.lance; readers see the 'published' tag.",
)
def curation(
    context: AssetExecutionContext,
    config: CurationConfig,
    lake: LakeResource,
    object_store: ObjectStoreResource,
    spark: SparkResource,
) -> MaterializeResult:
    """Apply the policy, check the signal distributions, publish, show the excluded images."""
    store = object_store.store()
    policy = config.policy(parse_policy(lake.curation_policy, store.read_bytes))
    layout = lake.layout()
    storage = store.storage_options(layout.curation)
    run = build_curation(
        layout.images,
        layout.texts,
        layout.curation,
        storage,
        policy,
        _semantic_pairs(lake, object_store, spark, policy),
    )
    # the versions the policy ran on (a newer one may have been published since)
    images = lance_io.open_dataset(layout.images, storage, run.totals["image_version"])
    texts = lance_io.open_dataset(layout.texts, storage, run.totals["text_version"])
    written = lance_io.open_dataset(layout.curation, storage, run.version)
    rows = written.to_table().to_pylist()  # bounded by the exclusions
    summary = lance_io.summarize(written, layout.curation)
    return checked_lance_result(
        context,
        "curation",
        summary,
        storage,
        check_curation(images, texts),
        lineage={"image_lance": str(images.version), "text_lance": str(texts.version)},
        **_run_metadata(run, rows),
        **excluded_gallery(images, rows),
    )
