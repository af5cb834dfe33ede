"""Checks of ``multimodal_lance`` against the inputs it was built from."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec, duplicates
from vlm_lake.tables.contracts import image_id_columns

ONE_ROW_PER_DOCUMENT = CheckSpec(
    "multimodal_lance",
    "one_row_per_document",
    True,
    "Exactly one row per document of text_lance.",
)
DANGLING_REFERENCES = CheckSpec(
    "multimodal_lance",
    "dangling_references",
    False,
    "Referenced image ids that are not in image_lance.",
)
SPECS = (ONE_ROW_PER_DOCUMENT, DANGLING_REFERENCES)


def check_multimodal(ds: Any, texts: Any, images: Any) -> list[CheckOutcome]:
    """Checks of one ``multimodal_lance`` version (:data:`SPECS`).

    Args:
        ds: The candidate multimodal version.
        texts: The ``text_lance`` version it was built from.
        images: The ``image_lance`` version it was built from.

    Returns:
        ``one_row_per_document`` (blocking) and ``dangling_references`` (warning).
    """
    return [_one_row_per_document(ds, texts), _dangling_references(ds, images)]


def _one_row_per_document(ds: Any, texts: Any) -> CheckOutcome:
    docids = ds.to_table(columns=["docid"]).column("docid").to_pylist()
    source = set(texts.to_table(columns=["docid"]).column("docid").to_pylist())
    dups = duplicates(docids)
    got = set(docids)
    missing, extra = sorted(source - got), sorted(got - source)
    return ONE_ROW_PER_DOCUMENT.outcome(
        not dups and not missing and not extra,
        f"{len(docids)} rows for {len(got)} docids",
        f"exactly one row for each of the {len(source)} documents in text_lance",
        {
            "duplicated": list(dups)[:MAX_EXAMPLES],
            "missing": missing[:MAX_EXAMPLES],
            "unexpected": extra[:MAX_EXAMPLES],
        },
    )


def _dangling_references(ds: Any, images: Any) -> CheckOutcome:
    known = pa.array(images.to_table(columns=["image_id"]).column("image_id").to_pylist())
    slots = image_id_columns(ds.schema)
    table = ds.to_table(columns=["docid", *slots])
    dangling: list[dict[str, str]] = []
    count = 0
    for slot in slots:
        col = table.column(slot)
        mask = pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, value_set=known)))
        count += pc.sum(mask).as_py() or 0
        if len(dangling) < MAX_EXAMPLES:
            for docid, image_id in zip(
                table.column("docid").filter(mask).to_pylist(),
                col.filter(mask).to_pylist(),
                strict=True,
            ):
                dangling.append({"docid": docid, "slot": slot, "image_id": image_id})
    return DANGLING_REFERENCES.outcome(
        count == 0,
        count,
        "every referenced image_id exists in image_lance",
        {"references": dangling[:MAX_EXAMPLES]},
    )
