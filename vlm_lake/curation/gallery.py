"""Thumbnails for the Dagster UI: markdown tables of small JPEGs inlined as data URIs.

A user judges curation by looking at images. The image assets record, as markdown
metadata, a sample of the images a run wrote, the largest duplicate clusters (the kept
image first) and the images the curation policy excluded, each with its rule. Thumbnails
are at most :data:`THUMB_PX` pixels on the longer side, JPEG quality 70: a few kB each, a
few dozen per materialization.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from vlm_lake.tables.lance_io import sql_string_list

log = logging.getLogger(__name__)

#: Longer side of a thumbnail, in pixels.
THUMB_PX = 96
#: A smaller image is enlarged (nearest neighbour: its pixels stay visible) to this size.
MIN_SHOWN_PX = 48
#: Thumbnails per table row.
PER_ROW = 6


def thumbnail(data: bytes, size: int = THUMB_PX) -> bytes | None:
    """A JPEG thumbnail of ``data`` (orientation applied), or None if it does not decode.

    Tiny images are enlarged to :data:`MIN_SHOWN_PX` with their pixels visible.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (size, size))
            small = ImageOps.exif_transpose(im).convert("RGB")
            small.thumbnail((size, size))
            factor = -(-MIN_SHOWN_PX // max(small.size))
            if factor > 1:
                small = small.resize(
                    (small.width * factor, small.height * factor), Image.Resampling.NEAREST
                )
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=70)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.warning("no thumbnail for an image of %d bytes: %s", len(data), exc)
        return None


def image_bytes(ds: Any, ids: Sequence[str]) -> dict[str, bytes]:
    """The stored bytes of the images ``ids`` of ``image_lance`` (one filtered scan)."""
    if not ids:
        return {}
    table = ds.to_table(
        columns=["image_id", "image_data"], filter=f"image_id IN ({sql_string_list(ids)})"
    )
    return dict(
        zip(
            table.column("image_id").to_pylist(),
            table.column("image_data").to_pylist(),
            strict=True,
        )
    )


def _cell(caption: str, data: bytes | None) -> str:
    label = caption.replace("|", "/").replace("[", "(").replace("]", ")")  # markdown-safe
    if data is None:
        return f"(no thumbnail) {label}"
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return f"![{label}]({uri}) {label}"


def gallery_markdown(rows: Sequence[tuple[str, Sequence[tuple[str, bytes | None]]]]) -> str:
    """A markdown table: one row per ``(title, [(caption, thumbnail), ...])``."""
    width = max((len(items) for _, items in rows), default=0)
    lines = ["| | " + " | ".join([" "] * width) + " |", "|---" * (width + 1) + "|"]
    for title, items in rows:
        cells = [_cell(c, d) for c, d in items] + [" "] * (width - len(items))
        lines.append(f"| **{title.replace('|', '/')}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gallery(ds: Any, groups: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str | None:
    """Thumbnails of images of ``ds``, grouped into titled rows.

    Args:
        ds: ``image_lance`` (a pinned version).
        groups: ``(title, [(image_id, caption), ...])`` per row, at most :data:`PER_ROW`
            images each (more are cut).

    Returns:
        The markdown, or None when there is no image to show.
    """
    groups = [(title, list(items)[:PER_ROW]) for title, items in groups if items]
    if not groups:
        return None
    found = image_bytes(ds, sorted({i for _, items in groups for i, _ in items}))
    rows = [
        (title, [(caption, thumbnail(found[i]) if i in found else None) for i, caption in items])
        for title, items in groups
    ]
    return gallery_markdown(rows)
