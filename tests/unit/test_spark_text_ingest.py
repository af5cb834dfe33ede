"""Text ingest on Spark: the same table, rejections and counts as the local path."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import lance
import pytest

from vlm_lake.errors import DuplicateKeyError, InvalidDocumentError
from vlm_lake.ingest.text_records import file_records
from vlm_lake.ingest.text_units import offsets, plan_text_units, unit_records
from vlm_lake.ingest.texts import TextIngestOptions, ingest_texts
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish

LOCAL = TextIngestOptions(engine="local")
SPARK = TextIngestOptions(engine="spark", split_bytes=300)  # ranges of 300 bytes


def _doc(i: int, text: str | None = None, **slots: Any) -> dict[str, Any]:
    return {"docid": f"d{i:03d}", "text": text or f"document {i} «ü»", **slots}


def _write_sources(root: Path, extra: list[dict[str, Any]] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_doc(i, image_id1=f"img{i}", image_id2=None)) for i in range(40)]
    lines[5] = "{not json"
    lines[9] = json.dumps({"docid": "d009", "text": "   "})  # empty text
    lines[12] = ""  # a blank line
    lines[17] = json.dumps(_doc(3))  # d003 again, later in the same file
    lines += [json.dumps(r) for r in extra or []]
    (root / "b_big.jsonl").write_bytes(("\n".join(lines) + "\n").encode())
    (root / "a_array.json").write_text(
        json.dumps([_doc(100, image_id3="img100"), _doc(20), {"docid": 7}])
    )
    (root / "c_tail.ndjson").write_bytes(b'{"docid": "d200", "text": "no final newline"}')
    (root / "notes.txt").write_text("not a text source")


def _table(uri: str) -> list[dict[str, Any]]:
    return sorted(lance.dataset(uri).to_table().to_pylist(), key=lambda r: r["docid"])


def _rejections(report: Any) -> list[tuple[Any, ...]]:
    return sorted((r.source_uri, r.stage, r.line, r.record_index, r.docid) for r in report.rejected)


def _both(spark: Any, store: ObjectStore, src: Path, tmp: Path, **opts: Any) -> tuple[Any, Any]:
    local = ingest_texts(
        store,
        str(src),
        str(tmp / "local.lance"),
        replace(LOCAL, **opts),
        rejects_uri=str(tmp / "local_rejects.lance"),
    )
    on_spark = ingest_texts(
        store,
        str(src),
        str(tmp / "spark.lance"),
        replace(SPARK, **opts),
        rejects_uri=str(tmp / "spark_rejects.lance"),
        spark=lambda: spark,
    )
    for name in ("local", "spark"):
        uri = str(tmp / f"{name}.lance")
        publish.publish(uri, lance.dataset(uri).version, None)
    return local, on_spark


@pytest.mark.parametrize("cut", [1, 7, 64, 300, 5000])
def test_ranges_own_every_line_once(tmp_path: Path, local_store: ObjectStore, cut: int) -> None:
    lines = [json.dumps({"n": i, "pad": "x" * random.Random(i).randint(0, 90)}) for i in range(60)]
    lines[10] = "{broken"
    lines[20] = ""
    path = tmp_path / "f.jsonl"
    path.write_bytes(("\n".join(lines)).encode())  # no final newline
    files = list(local_store.list(str(path)))
    units = plan_text_units(files, cut)
    assert len(units) == -(-path.stat().st_size // cut)
    got, line_counts, record_counts = [], {}, {}
    for unit in units:
        stats: dict[str, int] = {}
        items = list(unit_records(local_store, unit, stats))
        line_counts[unit.unit] = stats.get("lines", 0)
        record_counts[unit.unit] = sum(not isinstance(r, Exception) for _, r in items)
        got.append((unit.unit, items))
    base = offsets(units, line_counts, record_counts)
    flat = [
        (base[u][0] + line, r if not isinstance(r, Exception) else ("bad", r.stage))
        for u, items in got
        for line, r in items
    ]
    whole = [
        (line, r if not isinstance(r, Exception) else ("bad", r.stage))
        for line, r in file_records(local_store, files[0])
    ]
    assert flat == whole
    assert sum(record_counts.values()) == 58


def test_spark_ingest_equals_the_local_one_first_and_incremental(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    src = tmp_path / "texts"
    _write_sources(src)
    local, on_spark = _both(spark, local_store, src, tmp_path / "run1")
    assert _table(str(tmp_path / "run1" / "spark.lance")) == _table(
        str(tmp_path / "run1" / "local.lance")
    )
    assert _rejections(on_spark) == _rejections(local)
    stages = sorted({r[1] for r in _rejections(local)})
    assert stages == ["duplicate", "listing", "parse", "record"]
    assert on_spark.spark_tasks > 5  # the big JSON Lines file was read in ranges
    for field in ("documents", "num_slots", "inserted", "updated", "unchanged", "full_rebuild"):
        assert getattr(on_spark, field) == getattr(local, field), field
    assert (local.documents, local.num_slots) == (38, 3)
    # Next: d300 added, a second d001 appended (a duplicate: the first copy stays), the
    # array file gone: its d100 missing, its d020 now taken from the JSON Lines file
    # (another content: updated). K unchanged.
    _write_sources(src, extra=[_doc(300), _doc(1, "changed text", image_id1="img1")])
    (src / "a_array.json").unlink()
    run = tmp_path / "run1"
    local2 = ingest_texts(
        local_store,
        str(src),
        str(run / "local.lance"),
        LOCAL,
        rejects_uri=str(run / "local_rejects.lance"),
    )
    spark2 = ingest_texts(
        local_store,
        str(src),
        str(run / "spark.lance"),
        SPARK,
        rejects_uri=str(run / "spark_rejects.lance"),
        spark=lambda: spark,
    )
    assert not spark2.full_rebuild and spark2.committed
    for field in ("inserted", "updated", "unchanged", "missing_from_source", "deleted"):
        assert getattr(spark2, field) == getattr(local2, field), field
    assert (spark2.inserted, spark2.updated, spark2.missing_from_source) == (1, 1, 1)
    assert _table(str(tmp_path / "run1" / "spark.lance")) == _table(
        str(tmp_path / "run1" / "local.lance")
    )


def test_spark_ingest_k_growth_delete_missing_and_strict(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    src = tmp_path / "texts"
    _write_sources(src)
    _both(spark, local_store, src, tmp_path)
    _write_sources(src, extra=[_doc(400, image_id5="img400")])
    (src / "c_tail.ndjson").unlink()
    local, on_spark = _both(spark, local_store, src, tmp_path, delete_missing=True)
    assert on_spark.full_rebuild and on_spark.num_slots == local.num_slots == 5
    assert on_spark.deleted == local.deleted == 1
    assert _table(str(tmp_path / "spark.lance")) == _table(str(tmp_path / "local.lance"))
    (src / "notes.txt").unlink()

    def strict() -> None:
        options = replace(SPARK, on_bad_input="fail")
        ingest_texts(local_store, str(src), str(tmp_path / "s.lance"), options, spark=lambda: spark)

    with pytest.raises(InvalidDocumentError, match="record #2 has docid=7 of type int"):
        strict()
    lines = (src / "b_big.jsonl").read_text().split("\n")
    kept = [ln for ln in lines if ln and not ln.startswith("{not") and '"   "' not in ln]
    (src / "b_big.jsonl").write_text("\n".join(kept))
    (src / "a_array.json").write_text(json.dumps([_doc(100)]))
    with pytest.raises(DuplicateKeyError, match="'d003' appears twice"):
        strict()
