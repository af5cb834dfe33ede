"""Checks of ``text_lance``: unique docids, no empty text, the schema as contracted."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec, unique_key
from vlm_lake.tables.contracts import image_id_columns, text_schema

DOCID_UNIQUE = CheckSpec("text_lance", "docid_unique", True, "No docid appears twice.")
TEXT_NOT_EMPTY = CheckSpec(
    "text_lance", "text_not_empty", True, "Every document has a non-blank text."
)
SCHEMA_AS_CONTRACTED = CheckSpec(
    "text_lance",
    "schema_as_contracted",
    True,
    "docid, text, image_id1..K, source_uri, record_sha256.",
)
SPECS = (DOCID_UNIQUE, TEXT_NOT_EMPTY, SCHEMA_AS_CONTRACTED)


def check_texts(ds: Any) -> list[CheckOutcome]:
    """Checks of one ``text_lance`` version (:data:`SPECS`, all blocking)."""
    table = ds.to_table(columns=["docid", "text"])
    empty_mask = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(table.column("text"), "")), "")
    empty = table.column("docid").filter(empty_mask).to_pylist()
    num_slots = len(image_id_columns(ds.schema))
    contract = text_schema(num_slots)
    observed = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in ds.schema]
    wanted = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in contract]
    return [
        unique_key(DOCID_UNIQUE, ds, "docid"),
        TEXT_NOT_EMPTY.outcome(
            not empty,
            len(empty),
            f"0 documents with an empty or whitespace-only text among {len(table)}",
            {"docids": empty[:MAX_EXAMPLES]},
        ),
        SCHEMA_AS_CONTRACTED.outcome(
            ds.schema.equals(contract) and num_slots >= 1,
            ", ".join(observed),
            ", ".join(wanted),
            {"image_slots": num_slots},
        ),
    ]
