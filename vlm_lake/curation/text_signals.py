"""Text signals stored with each document: its length and a MinHash signature.

The signature is datasketch's ``MinHash`` (:data:`NUM_PERM` permutations, its default
SHA-1 hash) of the document's word shingles: lower-cased words split on whitespace,
:data:`SHINGLE` words per shingle (a document shorter than that is one shingle). Two
documents' estimated Jaccard similarity is the share of equal signature values, so texts
that differ by one word stay close (a 40-word text with one word changed shares 35 of 38
shingles), and near-duplicate documents are found by banding the signatures (LSH)
without comparing all pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from datasketch import MinHash

from vlm_lake.tables.contracts import TEXT_SIGNAL_FIELDS

#: Permutations of the MinHash signature (64 values of 32 bits: 256 bytes per document).
NUM_PERM = TEXT_SIGNAL_FIELDS[1].type.list_size
#: Words per shingle.
SHINGLE = 3

_TEMPLATE = MinHash(num_perm=NUM_PERM)


def shingles(text: str) -> list[bytes]:
    """The document's word shingles, UTF-8 encoded (at least one, for the empty text too)."""
    words = text.lower().split()
    if len(words) <= SHINGLE:
        return [" ".join(words).encode("utf-8")]
    return [
        " ".join(words[i : i + SHINGLE]).encode("utf-8") for i in range(len(words) - SHINGLE + 1)
    ]


def minhash(text: str) -> np.ndarray:
    """The ``NUM_PERM`` uint32 MinHash values of ``text``."""
    sketch = MinHash(num_perm=NUM_PERM, permutations=_TEMPLATE.permutations)
    sketch.update_batch(shingles(text))
    return sketch.hashvalues.astype(np.uint32)


def jaccard(a: Any, b: Any) -> float:
    """Estimated Jaccard similarity of two signatures (share of equal values)."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def text_signal_columns(texts: list[str]) -> dict[str, pa.Array]:
    """The signal columns for a batch of documents' texts, in order."""
    values = np.stack([minhash(t) for t in texts]) if texts else np.zeros((0, NUM_PERM))
    flat = pa.array(values.astype(np.uint32).ravel(), type=pa.uint32())
    return {
        "text_length": pa.array([len(t) for t in texts], type=pa.int32()),
        "minhash": pa.FixedSizeListArray.from_arrays(flat, NUM_PERM),
    }


def text_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """``rows`` (documents of ``text_lance``) as a batch of ``schema``, signals filled in."""
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    columns = batch.columns
    for name, values in text_signal_columns([r["text"] for r in rows]).items():
        columns[schema.get_field_index(name)] = values
    return pa.RecordBatch.from_arrays(columns, schema=schema)
