"""The LLaMA-Factory folder: records checked one by one against multimodal.lance."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import lance
import pytest
from helpers import write_published
from test_training_export import DOCS, _table

from vlm_lake.checks.llamafactory import check_llamafactory
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.llamafactory import (
    DATA_FILE,
    dataset_info,
    export_llamafactory,
    image_extension,
    publish_llamafactory,
)
from vlm_lake.training.llava import LLAVA_FILE, llava_record


def _export(store: ObjectStore, mm: str, folder: Path) -> tuple[int, int]:
    run = export_llamafactory(store, mm, str(folder), version=None)
    outcomes = check_llamafactory(
        store, str(folder), run.manifest, run.manifest.records, read=run.written_names
    )
    assert all(o.passed for o in outcomes), outcomes
    publish_llamafactory(store, str(folder), run.manifest)
    return run.written, run.reused


def test_folder_matches_the_table_record_by_record(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "multimodal.lance")
    write_published(_table(DOCS), mm, schema=multimodal_schema(3), max_rows_per_file=2)
    folder = tmp_path / "llamafactory"
    assert _export(local_store, mm, folder) == (3, 0)
    records = [json.loads(x) for x in (folder / DATA_FILE).read_text().splitlines()]
    rows = lance.dataset(mm).to_table().to_pylist()
    assert len(records) == len(rows) == 5
    for record, row in zip(records, rows, strict=True):
        slots = [row[f"image{k}"] for k in (1, 2, 3) if row[f"image{k}"] is not None]
        user, assistant = record["messages"]
        assert user == {"role": "user", "content": "<image>" * len(slots) + row["text"]}
        assert assistant == {"role": "assistant", "content": ""}
        assert [(folder / p).read_bytes() for p in record["images"]] == slots  # slot order
        for path, data in zip(record["images"], slots, strict=True):
            assert path == f"images/{hashlib.sha256(data).hexdigest()}.{image_extension(data)}"
    distinct = {row[f"image{k}"] for row in rows for k in (1, 2, 3)} - {None}
    assert len(list((folder / "images").iterdir())) == len(distinct) == 4  # each image once
    assert {p.suffix for p in (folder / "images").iterdir()} == {".jpg", ".png"}
    assert json.loads((folder / "dataset_info.json").read_text()) == dataset_info()
    assert dataset_info()["vlm_lake"]["file_name"] == DATA_FILE


def test_incremental_export_rewrites_no_image_and_checks_catch_damage(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "multimodal.lance")
    folder = tmp_path / "llamafactory"
    write_published(_table(DOCS[:3]), mm, schema=multimodal_schema(3), max_rows_per_file=2)
    _export(local_store, mm, folder)
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "images").iterdir()}
    lance.write_dataset(_table(DOCS[3:]), mm, mode="append")
    assert _export(local_store, mm, folder) == (1, 2)
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "images").iterdir()}
    assert {k: after[k] for k in stamps} == stamps  # no image written again
    assert len((folder / DATA_FILE).read_text().splitlines()) == 5
    run = export_llamafactory(local_store, mm, str(folder), version=None)
    victim = sorted((folder / "images").iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    got = {o.name: o for o in check_llamafactory(local_store, str(folder), run.manifest, 5)}
    assert not got["images_match_sha256"].passed and got["images_match_sha256"].observed == 1
    victim.unlink()
    got = {o.name: o for o in check_llamafactory(local_store, str(folder), run.manifest, 5)}
    assert not got["image_paths_exist"].passed
    assert got["tokens_match_images"].passed and got["record_count_matches"].passed


def test_llava_json_from_the_folder_matches_the_table(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    mm = str(tmp_path / "multimodal.lance")
    write_published(_table(DOCS), mm, schema=multimodal_schema(3), max_rows_per_file=2)
    folder = tmp_path / "llamafactory"
    _export(local_store, mm, folder)
    done = subprocess.run(
        [sys.executable, "-m", "vlm_lake.training.llava", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 5 LLaVA records" in done.stderr
    records = json.loads((folder / LLAVA_FILE).read_text(encoding="utf-8"))
    rows = lance.dataset(mm).to_table().to_pylist()
    assert len(records) == len(rows) == 5
    for index, (record, row) in enumerate(zip(records, rows, strict=True)):
        slots = [row[f"image{k}"] for k in (1, 2, 3) if row[f"image{k}"] is not None]
        human, gpt = record["conversations"]
        assert record["id"] == f"{index:09d}"
        assert human == {"from": "human", "value": "<image>" * len(slots) + row["text"]}
        assert gpt == {"from": "gpt", "value": ""}
        image = record.get("image")
        paths = [] if image is None else [image] if isinstance(image, str) else image
        assert [(folder / p).read_bytes() for p in paths] == slots
        assert (image is None) == (not slots) and isinstance(image, str) == (len(slots) == 1)
    with pytest.raises(ValueError, match="role='system' is not one of"):
        llava_record(0, {"messages": [{"role": "system", "content": "x"}], "images": []})
