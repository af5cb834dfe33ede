"""Lance layout upkeep: the key index is created and used, small fragments are compacted."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pytest
from helpers import photo_variant, sha256

from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.texts import ingest_texts
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import IMAGE_SCHEMA
from vlm_lake.tables.lance_io import open_dataset
from vlm_lake.tables.layout import (
    IMAGES_LAYOUT,
    CompactionPolicy,
    TableLayout,
    key_index_name,
    maintain,
)

SMALL = TableLayout(key="k", rows_per_fragment=100, compaction=CompactionPolicy(4, 0.5))


def _rows(lo: int, hi: int) -> pa.Table:
    return pa.table(
        {
            "k": [f"key{i:05d}" for i in range(lo, hi)],
            "payload": [f"value {i}".encode() * 50 for i in range(lo, hi)],
        }
    )


def _appends(uri: str, sizes: list[int]) -> None:
    """A first write, then one append per further size (each is a fragment)."""
    start = 0
    for n, size in enumerate(sizes):
        lance.write_dataset(_rows(start, start + size), uri, mode="create" if n == 0 else "append")
        start += size


def _uses_index(ds: lance.LanceDataset, predicate: str) -> bool:
    return "ScalarIndexQuery" in ds.scanner(filter=predicate).explain_plan()


def test_maintain_creates_the_key_index_and_lookups_use_it(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [60])
    before = open_dataset(uri)
    assert not _uses_index(before, "k = 'key00007'")

    report = maintain(uri, None, SMALL)

    ds = open_dataset(uri)
    assert report.index == "created" and not report.compacted and report.committed
    assert ds.version == before.version + 1
    (index,) = ds.describe_indices()
    assert (index.name, list(index.field_names)) == (key_index_name("k"), ["k"])
    assert ds.index_statistics(index.name)["num_indexed_rows"] == 60
    assert _uses_index(ds, "k = 'key00007'")
    assert _uses_index(ds, "k IN ('key00001', 'key00002')")
    hit = ds.to_table(filter="k = 'key00007'")
    assert hit.to_pylist() == _rows(7, 8).to_pylist()


def test_maintain_leaves_a_current_table_alone(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [60])
    maintain(uri, None, SMALL)
    version = open_dataset(uri).version

    report = maintain(uri, None, SMALL)

    assert (report.index, report.compacted, report.committed) == ("current", False, False)
    assert open_dataset(uri).version == version


def test_few_new_rows_stay_unindexed_until_a_fragment_fills(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [100])
    maintain(uri, None, SMALL)
    _appends_more = [(100, 130)]
    for lo, hi in _appends_more:
        lance.write_dataset(_rows(lo, hi), uri, mode="append")
    report = maintain(uri, None, SMALL)
    ds = open_dataset(uri)
    assert report.index == "current"  # 30 unindexed rows: Lance scans them, cheaply
    assert ds.index_statistics("k_idx")["num_unindexed_rows"] == 30
    assert ds.to_table(filter="k = 'key00120'").num_rows == 1  # still found

    lance.write_dataset(_rows(130, 230), uri, mode="append")  # 130 > rows_per_fragment
    assert maintain(uri, None, SMALL).index == "updated"
    assert open_dataset(uri).index_statistics("k_idx")["num_unindexed_rows"] == 0


def test_policy_counts_small_fragments_and_compacts_at_the_threshold(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [100, 10, 10])  # one full fragment, two small ones
    maintain(uri, None, SMALL)
    ds = open_dataset(uri)
    assert SMALL.compaction.small_fragments(ds, SMALL.rows_per_fragment) == 2
    assert not SMALL.compaction.needs_compaction(ds, SMALL.rows_per_fragment)
    assert not maintain(uri, None, SMALL).compacted

    lance.write_dataset(_rows(120, 130), uri, mode="append")
    lance.write_dataset(_rows(130, 140), uri, mode="append")
    ds = open_dataset(uri)
    assert SMALL.compaction.small_fragments(ds, SMALL.rows_per_fragment) == 4
    assert SMALL.compaction.needs_compaction(ds, SMALL.rows_per_fragment)
    expected = ds.to_table().sort_by("k")

    report = maintain(uri, None, SMALL)

    ds = open_dataset(uri)
    assert report.compacted and report.fragments_removed == 4 and report.fragments_added == 1
    assert [f.physical_rows for f in ds.get_fragments()] == [100, 40]
    assert ds.to_table().sort_by("k").equals(expected)  # every row, every byte
    assert report.index == "updated"
    assert ds.index_statistics("k_idx")["num_unindexed_rows"] == 0
    assert _uses_index(ds, "k = 'key00135'")
    assert ds.to_table(filter="k = 'key00135'").to_pylist() == _rows(135, 136).to_pylist()


def test_fragments_emptied_by_deletes_count_as_small(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [100, 100])
    ds = open_dataset(uri)
    assert SMALL.compaction.small_fragments(ds, SMALL.rows_per_fragment) == 0
    ds.delete("k >= 'key00110'")  # 90 of the second fragment's 100 rows
    assert SMALL.compaction.small_fragments(open_dataset(uri), SMALL.rows_per_fragment) == 1


def test_compaction_can_be_switched_off(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    _appends(uri, [10, 10, 10, 10, 10])
    report = maintain(uri, None, SMALL, allow_compaction=False)
    assert not report.compacted and report.index == "created"
    assert len(open_dataset(uri).get_fragments()) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_small_fragments": 1}, "max_small_fragments=1"),
        ({"small_fraction": 0.0}, "small_fraction=0.0"),
        ({"small_fraction": 1.5}, "small_fraction=1.5"),
    ],
)
def test_policy_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompactionPolicy(**kwargs)  # type: ignore[arg-type]


def test_layout_rejects_zero_rows_per_fragment() -> None:
    with pytest.raises(ValueError, match="rows_per_fragment=0"):
        TableLayout(key="k", rows_per_fragment=0)


def test_image_data_is_stored_uncompressed(tmp_path: Path, local_store: ObjectStore) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jpg").write_bytes(photo_variant(1))
    out = str(tmp_path / "images.lance")
    ingest_images(local_store, str(raw), out)
    field = open_dataset(out).schema.field("image_data")
    assert field.metadata == {b"lance-encoding:compression": b"none"}
    assert IMAGE_SCHEMA.field("image_data").metadata == field.metadata


def test_image_ingest_indexes_image_id_and_merges_keep_it_usable(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        (raw / f"img{i}.jpg").write_bytes(photo_variant(i, size=(40, 32)))
    out = str(tmp_path / "images.lance")
    first = ingest_images(local_store, str(raw), out, ImageIngestOptions(workers=2))
    publish.publish(out, first.summary.version)
    ds = open_dataset(out)
    assert first.summary.version == ds.version  # the candidate is the latest version
    assert [list(i.field_names) for i in ds.describe_indices()] == [["image_id"]]
    assert _uses_index(ds, "image_id = 'img1'")

    (raw / "img9.jpg").write_bytes(photo_variant(9, size=(40, 32)))
    second = ingest_images(local_store, str(raw), out, ImageIngestOptions(workers=2))
    ds = open_dataset(out)
    assert second.summary.version == first.summary.version + 1  # one commit: the merge
    assert _uses_index(ds, "image_id = 'img9'")
    (hit,) = ds.to_table(filter="image_id = 'img9'").to_pylist()
    assert hit["image_data"] == photo_variant(9, size=(40, 32))


def test_text_ingest_indexes_docid(tmp_path: Path, local_store: ObjectStore) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text('{"docid": "d1", "text": "one"}\n{"docid": "d2", "text": "two"}\n')
    out = str(tmp_path / "texts.lance")
    report = ingest_texts(local_store, str(src), out)
    ds = open_dataset(out)
    assert report.summary.version == ds.version
    assert [list(i.field_names) for i in ds.describe_indices()] == [["docid"]]
    assert _uses_index(ds, "docid = 'd2'")
    assert ds.to_table(filter="docid = 'd2'").column("text").to_pylist() == ["two"]


def test_incremental_image_ingests_are_compacted_by_policy(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    images = {f"img{i:02d}": photo_variant(i, size=(32, 24)) for i in range(20)}
    options = ImageIngestOptions(workers=2)
    out = str(tmp_path / "images.lance")
    limit = IMAGES_LAYOUT.compaction.max_small_fragments
    fragments = []
    for i, (image_id, data) in enumerate(images.items()):
        (raw / f"{image_id}.jpg").write_bytes(data)
        if i == 0:
            continue
        report = ingest_images(local_store, str(raw), out, options)
        publish.publish(out, report.summary.version)
        assert report.summary.version == open_dataset(out).version
        fragments.append(report.summary.num_fragments)
    # each merge adds one small fragment, until there are `limit` of them: then one compaction
    assert fragments[: limit - 1] == list(range(1, limit))
    assert fragments[limit - 1] == 1
    assert fragments[limit:] == list(range(2, 2 + len(fragments) - limit))

    ds = publish.open_published(out)
    rows = {r["image_id"]: r for r in ds.to_table().to_pylist()}
    assert set(rows) == set(images)
    for image_id, data in images.items():
        assert rows[image_id]["image_data"] == data
        assert rows[image_id]["sha256"] == sha256(data)
    assert ds.index_statistics("image_id_idx")["num_unindexed_rows"] < len(images)
    assert _uses_index(ds, "image_id = 'img05'")
    again = ingest_images(local_store, str(raw), out, options)
    assert not again.committed and again.summary.version == ds.version
