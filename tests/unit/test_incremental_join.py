"""Incremental join: only documents whose record or referenced images changed are re-joined.

Spark is slow to start and each join costs seconds, so the Spark part is one scenario with
three joins (full build, incremental update, a full rebuild to compare with). The
:func:`affected_documents` tests need no Spark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
from helpers import photo_variant, sha256

from vlm_lake import checks
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.texts import TextIngestOptions, ingest_texts
from vlm_lake.multimodal.delta import affected_documents
from vlm_lake.multimodal.join import build_multimodal
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA, multimodal_schema, text_schema
from vlm_lake.tables.lance_io import open_dataset
from vlm_lake.tables.layout import MULTIMODAL_LAYOUT, maintain

# -- affected_documents, on versions written directly -------------------------------------


def _text_row(docid: str, text: str, *ids: str | None, k: int = 3) -> dict[str, Any]:
    row: dict[str, Any] = {"docid": docid, "text": text}
    row.update({f"image_id{n}": (ids[n - 1] if n <= len(ids) else None) for n in range(1, k + 1)})
    row["source_uri"] = "/raw/docs.jsonl"
    row["record_sha256"] = sha256(json.dumps([docid, text, list(ids)]).encode())
    return row


def _image_row(image_id: str, data: bytes) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "image_data": data,
        "source_uri": f"/raw/{image_id}.jpg",
        "source_etag": sha256(data)[:8],
        "sha256": sha256(data),
        "size_bytes": len(data),
        "format": "jpeg",
        "width": 1,
        "height": 1,
    }


class Versions:
    """Writes successive versions of a text and an image table, as ingest would."""

    def __init__(self, root: Path) -> None:
        self.text_uri = str(root / "texts.lance")
        self.image_uri = str(root / "images.lance")

    def texts(self, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> int:
        table = pa.Table.from_pylist(rows, schema=schema or text_schema(3))
        return lance.write_dataset(table, self.text_uri, mode="overwrite").version

    def images(self, rows: list[dict[str, Any]]) -> int:
        table = pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)
        return lance.write_dataset(table, self.image_uri, mode="overwrite").version

    def affected(self, t0: int, t1: int, i0: int, i1: int) -> tuple[set[str], set[str]] | None:
        return affected_documents(
            text_uri=self.text_uri,
            image_uri=self.image_uri,
            text_storage=None,
            image_storage=None,
            old_text_version=t0,
            new_text_version=t1,
            old_image_version=i0,
            new_image_version=i1,
        )


DOCS = [
    _text_row("a", "uses x in slot 1", "x"),
    _text_row("b", "uses x in slot 3", None, "y", "x"),
    _text_row("c", "uses y", "y"),
    _text_row("d", "no images"),
    _text_row("e", "dangling", "later"),
]
X, Y, Z = (photo_variant(n, size=(16, 16)) for n in (1, 2, 3))


@pytest.fixture()
def versions(tmp_path: Path) -> Versions:
    v = Versions(tmp_path)
    v.texts(DOCS)
    v.images([_image_row("x", X), _image_row("y", Y)])
    return v


def test_no_change_affects_nothing(versions: Versions) -> None:
    assert versions.affected(1, 1, 1, 1) == (set(), set())
    t2 = versions.texts(list(reversed(DOCS)))  # same records, another order and version
    i2 = versions.images([_image_row("y", Y), _image_row("x", X)])
    assert versions.affected(1, t2, 1, i2) == (set(), set())


def test_changed_text_affects_only_that_document(versions: Versions) -> None:
    t2 = versions.texts([*DOCS[:3], _text_row("d", "now with words"), DOCS[4]])
    assert versions.affected(1, t2, 1, 1) == ({"d"}, set())


def test_changed_image_affects_every_document_referencing_it_in_any_slot(
    versions: Versions,
) -> None:
    i2 = versions.images([_image_row("x", Z), _image_row("y", Y)])
    assert versions.affected(1, 1, 1, i2) == ({"a", "b"}, set())


def test_same_bytes_under_a_new_etag_affect_nothing(versions: Versions) -> None:
    touched = {**_image_row("x", X), "source_etag": "new-etag"}
    i2 = versions.images([touched, _image_row("y", Y)])
    assert versions.affected(1, 1, 1, i2) == (set(), set())


def test_added_and_removed_images_affect_their_documents(versions: Versions) -> None:
    # "later" appears (e had a dangling reference), "y" disappears (b and c lose it)
    i2 = versions.images([_image_row("x", X), _image_row("later", Z)])
    assert versions.affected(1, 1, 1, i2) == ({"b", "c", "e"}, set())


def test_removed_document_is_removed_not_affected(versions: Versions) -> None:
    t2 = versions.texts([DOCS[1], DOCS[2], DOCS[3], DOCS[4]])  # a is gone
    i2 = versions.images([_image_row("x", Z), _image_row("y", Y)])  # and x changed
    assert versions.affected(1, t2, 1, i2) == ({"b"}, {"a"})


def test_new_document_is_affected(versions: Versions) -> None:
    t2 = versions.texts([*DOCS, _text_row("f", "new", "y")])
    assert versions.affected(1, t2, 1, 1) == ({"f"}, set())


def test_old_version_without_hashes_cannot_be_compared(tmp_path: Path) -> None:
    v = Versions(tmp_path)
    old_schema = pa.schema([f for f in text_schema(3) if f.name != "record_sha256"])
    t1 = v.texts([{k: r.get(k) for k in old_schema.names} for r in DOCS], old_schema)
    t2 = v.texts(DOCS)
    i1 = v.images([_image_row("x", X)])
    assert v.affected(t1, t2, i1, i1) is None


def test_cleaned_up_old_version_cannot_be_compared(versions: Versions) -> None:
    assert versions.affected(1, 1, 99, 1) is None
    assert versions.affected(42, 1, 1, 1) is None


# -- build_multimodal: full, incremental, compare, no change --------------------------------


class Pipeline:
    """Raw files -> published images/texts -> multimodal, the way the assets chain them."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.store = store
        self.raw_images = root / "raw" / "images"
        self.raw_images.mkdir(parents=True)
        self.docs = root / "raw" / "docs.jsonl"
        lake = root / "lake"
        self.images = str(lake / "images.lance")
        self.texts = str(lake / "texts.lance")
        self.out = str(lake / "multimodal.lance")

    def write_image(self, stem: str, data: bytes) -> None:
        path = self.raw_images / f"{stem}.jpg"
        old = path.stat().st_mtime_ns if path.exists() else 0
        path.write_bytes(data)
        new = max(path.stat().st_mtime_ns, old + 1_000_000_000)
        os.utime(path, ns=(new, new))

    def write_docs(self, docs: list[dict[str, Any]]) -> None:
        self.docs.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs))

    def ingest(self) -> None:
        img = ingest_images(
            self.store, str(self.raw_images), self.images, ImageIngestOptions(workers=2)
        )
        publish.publish(self.images, img.summary.version)
        txt = ingest_texts(
            self.store, str(self.docs), self.texts, TextIngestOptions(delete_missing=True)
        )
        publish.publish(self.texts, txt.summary.version)

    def join(self, spark: Any, out: str | None = None, **kwargs: Any):
        return build_multimodal(
            spark, text_uri=self.texts, image_uri=self.images, out_uri=out or self.out, **kwargs
        )

    def rows(self, uri: str | None = None) -> dict[str, dict[str, Any]]:
        rows = open_dataset(uri or self.out).to_table().to_pylist()
        by_id = {r["docid"]: r for r in rows}
        assert len(by_id) == len(rows), "one row per docid"
        return by_id


def _no_spark() -> Any:
    raise AssertionError("Spark was started although there was nothing to join")


def test_incremental_join_rejoins_only_affected_documents(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    p = Pipeline(tmp_path, local_store)
    imgs = {f"img{n}": photo_variant(n, size=(32, 24)) for n in range(4)}
    for stem, data in imgs.items():
        p.write_image(stem, data)
    docs = [
        {"docid": "d0", "text": "zero", "image_id1": "img0", "image_id2": "img1"},
        {"docid": "d1", "text": "one", "image_id1": "img1"},
        {"docid": "d2", "text": "two", "image_id1": "img2", "image_id3": "img1"},
        {"docid": "d3", "text": "three", "image_id1": "img3"},
        {"docid": "d4", "text": "four, to be removed", "image_id1": "img0"},
        {"docid": "d5", "text": "five ✓", "image_id2": "nope"},
    ]
    p.write_docs(docs)
    p.ingest()

    # 1. full build, published with its lineage
    first = p.join(spark)
    assert first.committed and first.full_rebuild
    assert first.rows_written == 6 and first.num_slots == 3
    assert first.dangling_references == 1
    publish.publish(p.out, first.summary.version, lineage=first.lineage())
    assert publish.published(p.out).lineage == {  # type: ignore[union-attr]
        "texts_version": str(first.text_version),
        "images_version": str(first.image_version),
    }
    before = p.rows()

    # 2. img1 changes, d4 leaves, d5's text changes
    new_img1 = photo_variant(11, size=(40, 30))
    p.write_image("img1", new_img1)
    docs = [d for d in docs if d["docid"] != "d4"]
    docs[-1] = {**docs[-1], "text": "five, revised ✓"}
    p.write_docs(docs)
    p.ingest()
    second = p.join(spark)
    assert second.committed and not second.full_rebuild
    assert second.summary.version == first.summary.version + 1  # delete + add: one commit
    assert second.rows_written == 4  # d0, d1, d2 (img1 in slot 3) and d5
    assert second.rows_deleted == 1
    assert second.images_attached == 2 + 1 + 2
    assert second.dangling_references == 1
    after = p.rows()
    assert set(after) == {"d0", "d1", "d2", "d3", "d5"}
    assert after["d0"]["image2"] == after["d1"]["image1"] == after["d2"]["image3"] == new_img1
    assert after["d0"]["image1"] == imgs["img0"]
    assert after["d3"] == before["d3"]  # not rewritten, still right
    assert after["d5"]["text"] == "five, revised ✓" and after["d5"]["image2"] is None
    outcomes = checks.check_multimodal(
        open_dataset(p.out), publish.open_published(p.texts), publish.open_published(p.images)
    )
    assert checks.blocking_failures(outcomes) == []

    # 3. the incremental result equals a full rebuild of the same inputs
    full = p.join(spark, out=str(tmp_path / "lake" / "full.lance"))
    assert full.full_rebuild and full.rows_written == 5
    assert p.rows(full.summary.uri) == after
    assert open_dataset(p.out).schema.equals(multimodal_schema(3))

    # 4. nothing changed since the published output: no commit, no Spark
    publish.publish(p.out, second.summary.version, lineage=second.lineage())
    p.ingest()  # inputs re-ingested without change: same published versions
    third = p.join(_no_spark)
    assert not third.committed and third.rows_written == 0
    assert third.summary.version == second.summary.version

    # 5. a candidate that failed its checks is discarded before the (empty) update
    junk = pa.Table.from_pylist([{**after["d3"], "docid": "junk"}], schema=multimodal_schema(3))
    lance.write_dataset(junk, p.out, mode="append")
    fourth = p.join(_no_spark)
    assert not fourth.committed
    assert p.rows() == after


def _published_output(v: Versions, out: str, docs: list[dict[str, Any]], t: int, i: int) -> int:
    """A multimodal output as a full build of texts@t and images@i would write it."""
    images = {
        r["image_id"]: r["image_data"]
        for r in open_dataset(v.image_uri, None, i).to_table().to_pylist()
    }
    rows = [
        {
            "docid": d["docid"],
            "text": d["text"],
            **{f"image_id{k}": d[f"image_id{k}"] for k in (1, 2, 3)},
            **{f"image{k}": images.get(d[f"image_id{k}"]) for k in (1, 2, 3)},
        }
        for d in docs
    ]
    lance.write_dataset(pa.Table.from_pylist(rows, schema=multimodal_schema(3)), out)
    maintain(out, None, MULTIMODAL_LAYOUT)  # the docid index, as the join adds it
    version = open_dataset(out).version
    publish.publish(out, version, lineage={"texts_version": str(t), "images_version": str(i)})
    return version


def test_unchanged_inputs_need_no_spark(versions: Versions, tmp_path: Path) -> None:
    out = str(tmp_path / "mm.lance")
    version = _published_output(versions, out, DOCS, 1, 1)
    publish.publish(versions.text_uri, 1)
    publish.publish(versions.image_uri, 1)
    report = build_multimodal(
        _no_spark, text_uri=versions.text_uri, image_uri=versions.image_uri, out_uri=out
    )
    assert not report.committed and not report.full_rebuild
    assert report.summary.version == version and report.summary.num_rows == len(DOCS)
    assert (report.text_version, report.image_version) == (1, 1)


def test_removing_documents_only_needs_no_spark(versions: Versions, tmp_path: Path) -> None:
    out = str(tmp_path / "mm.lance")
    version = _published_output(versions, out, DOCS, 1, 1)
    t2 = versions.texts(DOCS[1:])
    publish.publish(versions.text_uri, t2)
    publish.publish(versions.image_uri, 1)
    report = build_multimodal(
        _no_spark, text_uri=versions.text_uri, image_uri=versions.image_uri, out_uri=out
    )
    assert report.committed and report.rows_deleted == 1 and report.rows_written == 0
    assert report.summary.version == version + 1
    assert open_dataset(out).count_rows() == len(DOCS) - 1
