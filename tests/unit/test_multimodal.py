"""The id join: documents -> multimodal_lance, bytes fetched by position, order kept."""

from __future__ import annotations

import json
import math
from typing import Any

import lance
import pytest
from helpers import photo_variant, sha256

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.ingest.images import ingest_images
from vlm_lake.ingest.texts import ingest_texts
from vlm_lake.multimodal.join import build_multimodal, join_tasks
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.lance_io import open_dataset
from vlm_lake.tables.layout import MULTIMODAL_LAYOUT


def _lake(tmp_path, n_images: int, docs: list[dict[str, Any]], store: ObjectStore):
    img_dir = tmp_path / "raw" / "images"
    img_dir.mkdir(parents=True)
    originals = {}
    for i in range(n_images):
        data = photo_variant(i, fmt="PNG" if i % 5 == 0 else "JPEG")
        suffix = ".png" if i % 5 == 0 else ".jpg"
        (img_dir / f"img{i:03d}{suffix}").write_bytes(data)
        originals[f"img{i:03d}"] = data
    texts = tmp_path / "raw" / "docs.jsonl"
    texts.write_text("\n".join(json.dumps(d) for d in docs))
    lake = tmp_path / "lake"
    from vlm_lake.ingest.images import ImageIngestOptions
    from vlm_lake.ingest.texts import TextIngestOptions
    from vlm_lake.tables import publish

    images = ingest_images(
        store,
        str(img_dir),
        str(lake / "images.lance"),
        ImageIngestOptions(batch_rows=4, max_rows_per_file=4),
    )
    texts_report = ingest_texts(
        store, str(texts), str(lake / "texts.lance"), TextIngestOptions(batch_rows=3)
    )
    # Published, as the ingest assets do when their checks pass; the join reads that tag.
    publish.publish(str(lake / "images.lance"), images.summary.version)
    publish.publish(str(lake / "texts.lance"), texts_report.summary.version)
    return lake, originals


def test_left_join_by_id_keeps_order_and_bytes(spark: Any, tmp_path, local_store) -> None:
    docs = [
        {
            "docid": f"d{j:02d}",
            "text": f"doc {j} ✓",
            "image_id1": f"img{j % 9:03d}",
            "image_id2": f"img{(j * 4) % 9:03d}" if j % 3 else None,
            **({"image_id3": "missing-image"} if j == 5 else {}),
            **({"image_id3": f"img{(j + 1) % 9:03d}"} if j % 4 == 0 else {}),
        }
        for j in range(12)
    ]
    lake, originals = _lake(tmp_path, 9, docs, local_store)
    report = build_multimodal(
        spark,
        text_uri=str(lake / "texts.lance"),
        image_uri=str(lake / "images.lance"),
        out_uri=str(lake / "multimodal.lance"),
        batch_rows=5,
    )
    assert report.num_slots == 3
    assert report.dangling_references == 1
    out = lance.dataset(str(lake / "multimodal.lance")).to_table().to_pylist()
    assert [r["docid"] for r in out] == [d["docid"] for d in docs]  # input order kept
    attached = 0
    for doc, row in zip(docs, out, strict=True):
        assert row["text"] == doc["text"]
        for k in (1, 2, 3):
            ref = doc.get(f"image_id{k}")
            assert row[f"image_id{k}"] == ref
            if ref in originals:
                assert sha256(row[f"image{k}"]) == sha256(originals[ref])
                attached += 1
            else:
                assert row[f"image{k}"] is None
    assert report.images_attached == attached
    assert report.summary.num_rows == 12


def test_rejoin_overwrites_as_new_version(spark: Any, tmp_path, local_store) -> None:
    docs = [{"docid": "a", "text": "t", "image_id1": "img000"}]
    lake, _ = _lake(tmp_path, 2, docs, local_store)
    kwargs = dict(
        text_uri=str(lake / "texts.lance"),
        image_uri=str(lake / "images.lance"),
        out_uri=str(lake / "multimodal.lance"),
    )
    first = build_multimodal(spark, **kwargs)
    second = build_multimodal(spark, **kwargs)
    # each rewrite commits the rows, then the docid index on top (a rewrite drops it)
    assert (first.summary.version, second.summary.version) == (2, 4)
    assert second.summary.num_rows == 1


def test_duplicate_image_ids_never_publish(spark: Any, tmp_path, local_store) -> None:
    import pyarrow as pa

    from vlm_lake.tables.contracts import IMAGE_SCHEMA

    docs = [{"docid": "a", "text": "t", "image_id1": "img000"}]
    lake, _ = _lake(tmp_path, 1, docs, local_store)
    # Append a second row with the same image_id behind the ingest's back.
    img = lance.dataset(str(lake / "images.lance")).to_table()
    duplicated = lance.write_dataset(
        pa.Table.from_pylist(img.to_pylist(), schema=IMAGE_SCHEMA),
        str(lake / "images.lance"),
        mode="append",
    )
    with pytest.raises(RuntimeError, match="must be unique"):
        build_multimodal(
            spark,
            text_uri=str(lake / "texts.lance"),
            image_uri=str(lake / "images.lance"),
            out_uri=str(lake / "multimodal.lance"),
            image_version=duplicated.version,  # the unpublished version with the duplicate
        )
    with pytest.raises(DatasetNotFoundError):  # nothing was committed
        open_dataset(str(lake / "multimodal.lance"))


@pytest.mark.parametrize(
    ("num_docs", "cores", "tasks"),
    [
        (25_000, 2, 8),  # 7 files' worth of documents, rounded up to whole waves of 2
        (10_000, 2, 4),
        (10_000, 16, 16),  # one wave over all cores: 625 documents each
        (4_096, 2, 2),
        (4_096, None, 1),  # Spark Connect: cores unknown, one file's worth per task
        (25_000, None, 7),
        (3, 2, 2),
        (3, 200, 3),  # never more tasks than documents
        (0, 4, 1),
    ],
)
def test_join_tasks_cap_documents_per_task_in_whole_waves(
    num_docs: int, cores: int | None, tasks: int
) -> None:
    assert join_tasks(num_docs, cores) == tasks
    if num_docs:
        assert math.ceil(num_docs / tasks) <= MULTIMODAL_LAYOUT.rows_per_fragment
