"""Every selection a user can make runs: each asset alone, with its upstream or downstream,
and unions, in process and through the CLI, on a lake built by a full run first."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lance
import pytest
from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize
from helpers import cli_env

from assets import ALL_ASSETS
from dagster_project.definitions import defs
from dagster_project.settings import build_resources
from vlm_lake.lake import SAMPLE_IMAGES_URI
from vlm_lake.tables import publish

BIN = Path(sys.executable).parent
ASSET_NAMES = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())


def _env(lake: Path, dagster_home: Path) -> dict[str, str]:
    return cli_env(dagster_home, SPARK_MASTER="local[2]", LAKE_URI=str(lake))


@pytest.fixture(scope="module")
def full_lake(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Iterator[Path]:
    """The shipped samples materialized once with every asset (the code location's wiring)."""
    lake = tmp_path_factory.mktemp("selections") / "lake"
    with pytest.MonkeyPatch.context() as env:
        for name in ("RAW_IMAGES_URI", "RAW_TEXTS_URI", "AWS_ENDPOINT_URL", "SPARK_REMOTE"):
            env.delenv(name, raising=False)
        env.setenv("LAKE_URI", str(lake))
        assert materialize(ALL_ASSETS, resources=build_resources()).success
        yield lake


def _selections() -> list[str]:
    """Each asset alone, with its upstream (+X, *X), with its downstream (X+, X*)."""
    found: dict[frozenset[str], str] = {}
    graph = defs.resolve_asset_graph()
    for name in ASSET_NAMES:
        for text in (name, f"+{name}", f"*{name}", f"{name}+", f"{name}*"):
            keys = AssetSelection.from_string(text).resolve(graph)
            found.setdefault(frozenset(k.to_user_string() for k in keys), text)
    return sorted(found.values())


@pytest.mark.parametrize("selection", _selections())
def test_every_selection_materializes_exactly_what_it_names(
    full_lake: Path, selection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKE_URI", str(full_lake))
    graph = defs.resolve_asset_graph()
    wanted = {k.to_user_string() for k in AssetSelection.from_string(selection).resolve(graph)}
    result = materialize(ALL_ASSETS, resources=build_resources(), selection=selection)
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == wanted
    checked = {c.asset_key.to_user_string() for c in result.get_asset_check_evaluations()}
    assert checked == wanted - {"rejected_images", "rejected_documents"}  # those have none


def test_a_quarantine_alone_records_rejections_without_writing_the_table(
    full_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for image in Path(SAMPLE_IMAGES_URI).iterdir():
        (raw / image.name).write_bytes(image.read_bytes())
    (raw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (raw / "notes.txt").write_text("not an image")
    monkeypatch.setenv("LAKE_URI", str(full_lake))
    monkeypatch.setenv("RAW_IMAGES_URI", str(raw))
    images = str(full_lake / "images.lance")
    before = lance.dataset(images).version
    result = materialize(ALL_ASSETS, resources=build_resources(), selection="rejected_images")
    assert result.success
    rejected = lance.dataset(str(full_lake / "rejected_images.lance")).to_table().to_pylist()
    assert {(r["image_id"], r["stage"]) for r in rejected} == {
        ("broken", "decode"),
        ("notes", "listing"),
    }
    assert lance.dataset(images).version == before  # image_lance not written
    assert publish.published(images).version == before


def _cli(selection: str, env: dict[str, str], cwd: Path) -> set[str]:
    proc = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "dagster_project.definitions"]
        + ["--select", selection],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"--select {selection!r} failed:\n{out[-6000:]}"
    with DagsterInstance.get() as instance:  # the CLI's instance: DAGSTER_HOME of the tests
        [run] = instance.get_runs(limit=1)
        events = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    assert run.is_success
    return {e.dagster_event.asset_key.to_user_string() for e in events}


def test_the_selections_users_make_run_through_the_cli(
    full_lake: Path, dagster_home: Path, tmp_path: Path
) -> None:
    env = _env(full_lake, dagster_home)
    expected = {
        "image_lance": {"image_lance"},
        "text_lance": {"text_lance"},
        "rejected_images": {"rejected_images"},
        "+multimodal_lance": {"image_lance", "text_lance", "multimodal_lance"},
        "image_lance+": {"image_lance", "multimodal_lance", "image_features", "curation"},
        "image_lance,text_lance,multimodal_lance,training_json": {
            "image_lance",
            "text_lance",
            "multimodal_lance",
            "training_json",
        },
    }
    for selection, assets in expected.items():
        assert _cli(selection, env, tmp_path) == assets, selection
    records = (full_lake / "training_data.json").read_text()
    assert records.startswith("[") and records.count('"instruction"') == 4
