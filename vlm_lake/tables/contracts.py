"""The data contracts: every table's schema and the helpers that name its columns.

Writers (ingest, the join, the feature job, quarantine) and readers (the checks, the
exports, ``VLMDataset``) import these from here, so a reader never imports a writer: this
module needs only pyarrow, never Spark, Lance or torch.
"""

from __future__ import annotations

import re

import pyarrow as pa

#: Field metadata of image byte columns. JPEG and PNG bytes are already compressed, so
#: Lance stores them as they are (compressing again costs write time and saves nothing;
#: see docs/layout.md, measured in docs/benchmarks.md).
IMAGE_BYTES_METADATA = {"lance-encoding:compression": "none"}

# -- image_lance ---------------------------------------------------------------------------

#: ``image_lance``: one row per image, bytes exactly as uploaded. ``image_data`` is plain
#: binary, not Lance blob encoding: blobs read back as descriptors, so every reader of the
#: bytes would change, for no gain on the pipeline's reads (docs/layout.md).
IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_data", pa.binary(), nullable=False, metadata=IMAGE_BYTES_METADATA),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_etag", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        # Quality signals measured at ingest (vlm_lake/imaging/signals.py); null only in a
        # row written with signals off.
        pa.field("phash", pa.int64()),
        pa.field("blur", pa.float32()),
        pa.field("luma_mean", pa.float32()),
        pa.field("dark_share", pa.float32()),
        pa.field("bright_share", pa.float32()),
        pa.field("flat_share", pa.float32()),
        pa.field("aspect_ratio", pa.float32()),
        pa.field("short_side", pa.int32()),
    ]
)

#: The quality-signal columns of ``image_lance``.
IMAGE_SIGNAL_COLUMNS: tuple[str, ...] = (
    "phash",
    "blur",
    "luma_mean",
    "dark_share",
    "bright_share",
    "flat_share",
    "aspect_ratio",
    "short_side",
)

# -- text_lance ----------------------------------------------------------------------------

#: Documents with more image slots than this are rejected (a typo like image_id100000
#: would otherwise create that many columns).
MAX_IMAGE_SLOTS = 64

#: Columns after the image ids: where the document came from and a hash of its content.
PROVENANCE_COLUMNS = ("source_uri", "record_sha256")

#: Columns after those: the text's length (characters) and its MinHash signature
#: (:mod:`vlm_lake.curation.text_signals`); null only in rows written by hand.
TEXT_SIGNAL_FIELDS = (
    pa.field("text_length", pa.int32()),
    pa.field("minhash", pa.list_(pa.uint32(), 64)),
)

_SLOT_KEY = re.compile(r"^image_id(\d+)$")


def slot_number(key: str) -> int | None:
    """The N of an ``image_idN`` key, or None for any other key."""
    match = _SLOT_KEY.match(key)
    return int(match.group(1)) if match else None


def image_id_column(slot: int) -> str:
    """Name of the id column of image slot ``slot`` (1-based): ``image_id<slot>``."""
    return f"image_id{slot}"


def text_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``text_lance`` with ``num_slots`` image-id columns."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(image_id_column(k), pa.string()) for k in range(1, num_slots + 1)]
        + [pa.field(name, pa.string(), nullable=False) for name in PROVENANCE_COLUMNS]
        + list(TEXT_SIGNAL_FIELDS)
    )


def image_id_columns(schema: pa.Schema) -> list[str]:
    """Return the ``image_idN`` column names of a schema, ordered by N."""
    found = [(n, f.name) for f in schema if (n := slot_number(f.name)) is not None]
    return [name for _, name in sorted(found)]


# -- multimodal_lance ----------------------------------------------------------------------


def image_columns(num_slots: int) -> list[str]:
    """Names of the image byte columns of ``multimodal_lance``: ``image1`` ... ``imageK``."""
    return [f"image{k}" for k in range(1, num_slots + 1)]


def multimodal_schema(num_slots: int) -> pa.Schema:
    """Arrow schema of ``multimodal_lance``: docid, text, image_id1..K, image1..K (bytes)."""
    return pa.schema(
        [
            pa.field("docid", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
        + [pa.field(image_id_column(k), pa.string()) for k in range(1, num_slots + 1)]
        + [
            pa.field(name, pa.binary(), metadata=IMAGE_BYTES_METADATA)
            for name in image_columns(num_slots)
        ]
    )


# -- image_features ------------------------------------------------------------------------

#: Width of a feature vector: ResNet-50's pooled output.
FEATURE_DIM = 2048

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("features", pa.list_(pa.float32(), FEATURE_DIM), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("precision", pa.string(), nullable=False),
    ]
)

# -- quarantine ----------------------------------------------------------------------------

REJECTED_IMAGES_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("etag", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

REJECTED_DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("record_index", pa.int64()),
        pa.field("docid", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

# -- curation ------------------------------------------------------------------------------

#: ``curation.lance``: one row per image or document a curation policy excludes, and rule
#: (:mod:`vlm_lake.curation.exclusions`); the policy is in the schema's metadata.
CURATION_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # "image" or "document"
        pa.field("id", pa.string(), nullable=False),  # image_id or docid
        pa.field("rule", pa.string(), nullable=False),  # the policy field, or a duplicate level
        pa.field("value", pa.float64(), nullable=False),  # what was measured
        pa.field("threshold", pa.float64(), nullable=False),  # what the policy allows
        pa.field("detail", pa.string()),  # for duplicates: the one its cluster keeps
    ]
)
