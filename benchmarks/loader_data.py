"""The table the loader comparisons read: the first documents of the benchmark lake.

``multimodal.lance`` of the benchmark lake holds ``n // 2`` documents; the loader rows read
at most :data:`benchmarks.loader.MAX_DOCS` of them. The S3 and ``lance.torch`` rows read
whole tables, so they get a copy of those first documents written with the lake's own
fragment size (the largest fragment's row count), so every reader sees the production
layout and the same rows. With ``photo_size`` every image is replaced by a generated photo
of that size (web-size photos, where decoding costs more and Pillow's draft mode applies).
"""

from __future__ import annotations

from dataclasses import dataclass

import lance
import pyarrow as pa

from benchmarks.common import Context
from benchmarks.data import write_photos
from vlm_lake.tables.contracts import image_columns, image_id_columns

#: Distinct generated photos the web-size table cycles through.
PHOTO_POOL = 400


@dataclass(frozen=True)
class LoaderTable:
    """A copy of the lake's first documents.

    Attributes:
        uri: Local path of the copy (``multimodal.lance`` layout).
        docs: Documents (rows) in it.
        present: Images per batch of ``batch`` documents, in row order.
        fragments: Fragments (data files) in it.
        bytes: Bytes of its data files.
    """

    uri: str
    docs: int
    present: list[int]
    fragments: int
    bytes: int


def _with_photos(ctx: Context, table: pa.Table, size: tuple[int, int]) -> pa.Table:
    """``table`` with each present image replaced by a generated ``size`` photo."""
    folder = ctx.cache / f"photos-{size[0]}x{size[1]}"
    write_photos(folder, PHOTO_POOL, size=size)
    pool = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))[:PHOTO_POOL]]
    used = 0
    for name in image_columns(len(image_id_columns(table.schema))):
        values = table.column(name).to_pylist()
        for i, data in enumerate(values):
            if data is not None:
                values[i], used = pool[used % len(pool)], used + 1
        column = pa.array(values, type=table.schema.field(name).type)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def loader_table(
    ctx: Context, docs: int, batch: int, photo_size: tuple[int, int] | None = None
) -> LoaderTable:
    """Write (once per run) the first ``docs`` documents of the lake to their own table."""
    source = lance.dataset(ctx.lake().multimodal)
    rows_per_file = max(f.count_rows() for f in source.get_fragments())
    name = f"loader-{docs}docs" + (f"-{photo_size[0]}x{photo_size[1]}" if photo_size else "")
    uri = str(ctx.work / f"{name}.lance")
    if not (ctx.work / f"{name}.lance").exists():
        table = source.take(list(range(docs)))
        if photo_size is not None:
            table = _with_photos(ctx, table, photo_size)
        lance.write_dataset(table, uri, max_rows_per_file=rows_per_file)
    ds = lance.dataset(uri)
    ids = ds.to_table(columns=image_id_columns(ds.schema))
    per_doc = [sum(c[i].is_valid for c in ids.columns) for i in range(docs)]
    data = [f for frag in ds.get_fragments() for f in frag.data_files()]
    size = sum((ctx.work / f"{name}.lance" / "data" / f.path).stat().st_size for f in data)
    return LoaderTable(
        uri=uri,
        docs=docs,
        present=[sum(per_doc[s : s + batch]) for s in range(0, docs, batch)],
        fragments=len(ds.get_fragments()),
        bytes=size,
    )
