"""Checks of ``image_lance``: unique ids, every written image decodes, duplicate images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_lake.checks.spec import MAX_EXAMPLES, CheckOutcome, CheckSpec, unique_key
from vlm_lake.curation.clusters import PHASH_THRESHOLD, cluster_images
from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.decode import probe_image
from vlm_lake.tables import lance_io, reads

IMAGE_ID_UNIQUE = CheckSpec("image_lance", "image_id_unique", True, "No image_id appears twice.")
IMAGES_DECODE = CheckSpec(
    "image_lance", "images_decode", True, "Every image written by the run decodes with Pillow."
)
DUPLICATE_IMAGES = CheckSpec(
    "image_lance",
    "duplicate_images",
    False,
    "Byte-identical images under different ids (sha256).",
)
PERCEPTUAL_DUPLICATES = CheckSpec(
    "image_lance",
    "perceptual_duplicates",
    False,
    f"Clusters of images whose perceptual hashes are within {PHASH_THRESHOLD} bits "
    "(re-encoded, resized, slightly cropped copies), each with the image it keeps.",
    threshold=PHASH_THRESHOLD,
)
SPECS = (IMAGE_ID_UNIQUE, IMAGES_DECODE, DUPLICATE_IMAGES, PERCEPTUAL_DUPLICATES)


def check_images(
    ds: Any, written_ids: Sequence[str] | None = None, batch_rows: int = 64
) -> list[CheckOutcome]:
    """Checks of one ``image_lance`` version (:data:`SPECS`).

    Args:
        ds: The dataset, opened at the candidate version.
        written_ids: Rows written by the run that produced it; only those are decoded again
            (the others were decoded when they were written and have not changed). None
            decodes every row.
        batch_rows: Rows per read while decoding.

    Returns:
        ``image_id_unique`` and ``images_decode`` (blocking), ``duplicate_images`` and
        ``perceptual_duplicates`` (warnings).
    """
    return [
        unique_key(IMAGE_ID_UNIQUE, ds, "image_id"),
        _images_decode(ds, written_ids, batch_rows),
        _duplicate_images(ds),
        _perceptual_duplicates(ds),
    ]


def _images_decode(ds: Any, written_ids: Sequence[str] | None, batch_rows: int) -> CheckOutcome:
    scanned = 0
    failures: list[dict[str, str]] = []
    for batch in _image_batches(ds, written_ids, batch_rows):
        for image_id, data, uri in zip(
            batch.column("image_id").to_pylist(),
            batch.column("image_data").to_pylist(),
            batch.column("source_uri").to_pylist(),
            strict=True,
        ):
            scanned += 1
            try:
                probe_image(data, uri)
            except InvalidImageError as exc:
                failures.append({"image_id": image_id, "problem": exc.problem})
    scope = "every row" if written_ids is None else f"the {len(written_ids)} rows this run wrote"
    return IMAGES_DECODE.outcome(
        not failures,
        len(failures),
        f"0 undecodable images ({scope}; {scanned} decoded)",
        {"decoded": scanned, "failures": failures[:MAX_EXAMPLES]},
    )


def _duplicate_images(ds: Any) -> CheckOutcome:
    table = ds.to_table(columns=["image_id", "sha256"])
    groups: dict[str, list[str]] = {}
    for image_id, digest in zip(
        table.column("image_id").to_pylist(), table.column("sha256").to_pylist(), strict=True
    ):
        groups.setdefault(digest, []).append(image_id)
    same = [{"sha256": d[:16], "image_ids": ids} for d, ids in groups.items() if len(ids) > 1]
    return DUPLICATE_IMAGES.outcome(
        not same,
        len(same),
        "no two image_ids with byte-identical content (same sha256)",
        {"groups": same[:MAX_EXAMPLES]},
    )


def _perceptual_duplicates(ds: Any) -> CheckOutcome:
    """Perceptual clusters (:func:`~vlm_lake.curation.clusters.cluster_images`), largest first.

    Reads ``image_id``, ``phash``, ``sha256``, ``width``, ``height`` (about 60 bytes per
    image); rows without a hash (written with signals off) are left out.
    """
    table = ds.to_table(
        columns=["image_id", "phash", "sha256", "width", "height"], filter="phash IS NOT NULL"
    )
    ids = table.column("image_id").combine_chunks()
    pixels = pc.multiply(
        table.column("width").cast(pa.int64()), table.column("height").cast(pa.int64())
    )
    clusters = cluster_images(
        table.column("phash").combine_chunks().to_numpy(),
        # sha256 as integer codes: no Python string per image
        pc.dictionary_encode(table.column("sha256").combine_chunks()).indices.to_numpy(),
        pixels.to_numpy(),
    )
    groups = clusters.groups()

    def name(members: np.ndarray) -> list[str]:
        return ids.take(pa.array(members, pa.int64())).to_pylist()

    examples = [
        {"kept": name(g[:1])[0], "duplicates": name(g[1:MAX_EXAMPLES]), "size": len(g)}
        for g in groups[:MAX_EXAMPLES]
    ]
    return PERCEPTUAL_DUPLICATES.outcome(
        not groups,
        len(groups),
        f"no two images within {PHASH_THRESHOLD} bits of perceptual hash "
        f"({len(ids)} hashed images compared through hash bands, not all pairs)",
        {"clusters": examples, "duplicates": len(clusters.duplicates())},
    )


def _image_batches(
    ds: Any, written_ids: Sequence[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    columns = ["image_id", "image_data", "source_uri"]
    if written_ids is None:
        yield from reads.read_ranges(ds, columns, batch_rows)
        return
    for start in range(0, len(written_ids), batch_rows):
        chunk = written_ids[start : start + batch_rows]
        yield from ds.to_batches(
            columns=columns,
            filter=f"image_id IN ({lance_io.sql_string_list(chunk)})",
            batch_size=batch_rows,
        )
