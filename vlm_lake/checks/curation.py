"""Checks of the curation: signal distributions (warnings) and the exports' exclusion share.

The distribution checks read a sample of the signal columns for their percentiles and
count flagged rows with Lance filters (streamed, memory bounded). The exclusion-share check
is declared on each training export and blocks one whose curation leaves out more than the
policy's ``max_excluded_share`` of its documents, or of the images they name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlm_lake.checks.spec import CheckOutcome, CheckSpec
from vlm_lake.curation.image_report import FLAGS
from vlm_lake.tables.contracts import IMAGE_SIGNAL_COLUMNS
from vlm_lake.training.manifest import ExportManifest

ASSET = "curation"
#: A flag holding for more than this share of the rows is unusual: the check warns.
UNUSUAL_SHARE = 0.2
#: Rows sampled for the percentiles.
SAMPLE_ROWS = 100_000
#: Texts shorter than this many characters count as (almost) empty.
SHORT_TEXT = 16
PERCENTILES = (1, 5, 50, 95, 99)

IMAGE_SIGNALS = CheckSpec(
    ASSET,
    "image_signal_distribution",
    False,
    "Every image has its signals, and no quality flag holds for more than "
    f"{UNUSUAL_SHARE:.0%} of the images; the percentiles of each signal are recorded.",
    UNUSUAL_SHARE,
)
TEXT_SIGNALS = CheckSpec(
    ASSET,
    "text_signal_distribution",
    False,
    f"Every document has its signals, and at most {UNUSUAL_SHARE:.0%} are shorter than "
    f"{SHORT_TEXT} characters; the percentiles of the text lengths are recorded.",
    UNUSUAL_SHARE,
)
SPECS = (IMAGE_SIGNALS, TEXT_SIGNALS)


def percentiles(ds: Any, columns: list[str]) -> dict[str, dict[str, float]]:
    """Percentiles of ``columns`` over a sample of at most :data:`SAMPLE_ROWS` rows."""
    rows = ds.count_rows()
    if rows == 0:
        return {}
    table = ds.sample(min(rows, SAMPLE_ROWS), columns=columns)
    out = {}
    for name in columns:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        if len(values):
            cuts = np.percentile(values, PERCENTILES)
            out[name] = {
                f"p{p}": round(float(v), 4) for p, v in zip(PERCENTILES, cuts, strict=True)
            }
    return out


def _flag_outcome(
    spec: CheckSpec, rows: int, flags: dict[str, int], missing: int, spread: dict[str, Any]
) -> CheckOutcome:
    unusual = {k: v for k, v in flags.items() if rows and v / rows > UNUSUAL_SHARE}
    return spec.outcome(
        missing == 0 and not unusual,
        {"rows": rows, "without_signals": missing, "unusual": unusual},
        f"no row without signals, no flag above {UNUSUAL_SHARE:.0%} of {rows} rows",
        {"flagged": flags, "percentiles": spread},
    )


def check_curation(images: Any, texts: Any) -> list[CheckOutcome]:
    """The distribution checks (:data:`SPECS`) of the images and texts a policy ran on."""
    counts = {k: int(images.count_rows(filter=e)) for k, e in FLAGS.items()}
    missing = counts.pop("without_signals")
    numeric = [c for c in IMAGE_SIGNAL_COLUMNS if c != "phash"]
    image_outcome = _flag_outcome(
        IMAGE_SIGNALS, images.count_rows(), counts, missing, percentiles(images, numeric)
    )
    text_missing = int(texts.count_rows(filter="text_length IS NULL OR minhash IS NULL"))
    short = {"short": int(texts.count_rows(filter=f"text_length < {SHORT_TEXT}"))}
    text_outcome = _flag_outcome(
        TEXT_SIGNALS, texts.count_rows(), short, text_missing, percentiles(texts, ["text_length"])
    )
    return [image_outcome, text_outcome]


def excluded_share(spec: CheckSpec, manifest: ExportManifest, max_share: float) -> CheckOutcome:
    """Whether an export left out at most ``max_share`` of its documents and of their images.

    Args:
        spec: The export's ``excluded_share`` check.
        manifest: The export's manifest (its shards count what was left out).
        max_share: The policy's ``max_excluded_share``.
    """
    documents = manifest.records + manifest.excluded_documents
    images = manifest.images + manifest.excluded_images
    doc_share = manifest.excluded_documents / documents if documents else 0.0
    image_share = manifest.excluded_images / images if images else 0.0
    return spec.outcome(
        doc_share <= max_share and image_share <= max_share,
        {"documents": round(doc_share, 4), "images": round(image_share, 4)},
        f"at most {max_share:.0%} of the documents, and of the images they name, left out",
        {
            "excluded_documents": manifest.excluded_documents,
            "documents": documents,
            "excluded_images": manifest.excluded_images,
            "images": images,
            "curation": manifest.curation or "none published: nothing excluded",
        },
    )
