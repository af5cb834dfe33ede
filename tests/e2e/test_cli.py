"""End to end through the CLIs, in subprocesses, as a user would run them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import lance
from helpers import S3_KEY, S3_REGION, S3_SECRET, cli_env, run_cli, sha256, upload_seed_example

from vlm_lake.tables import publish

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def test_dagster_asset_materialize_on_s3(s3_endpoint, s3_store, bucket, dagster_home, tmp_path):
    originals = upload_seed_example(s3_store.client, bucket)
    env = cli_env(dagster_home, SPARK_MASTER="local[2]")
    env.update(
        AWS_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_REGION=S3_REGION,
        RAW_IMAGES_URI=f"s3://{bucket}/lanceData/",
        RAW_TEXTS_URI=f"s3://{bucket}/Lance/data/testdata.json",
        LAKE_URI=f"s3://{bucket}/lake",
    )
    proc = run_cli(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "dagster_project.definitions",
            "--select",
            "*",
        ],
        env,
        tmp_path,
    )
    assert "training_json - wrote 3 records with 7 images" in proc.stdout + proc.stderr
    assert S3_SECRET not in proc.stdout + proc.stderr  # credentials never logged

    keys = {
        o["Key"] for o in s3_store.client.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]
    }
    for name in ("images.lance", "texts.lance", "multimodal.lance"):
        assert any(k.startswith(f"lake/{name}/_versions/") for k in keys), name
    assert "lake/training_data.json" in keys

    opts = s3_store.storage_options(f"s3://{bucket}")
    mm = lance.dataset(f"s3://{bucket}/lake/multimodal.lance", storage_options=opts)
    assert mm.count_rows() == 3
    for name in ("images", "texts", "multimodal"):  # every checked version was published
        assert publish.published(f"s3://{bucket}/lake/{name}.lance", opts).version == 2
    records = json.loads(s3_store.read_bytes(f"s3://{bucket}/lake/training_data.json"))
    assert [len(r["input"]) for r in records] == [2, 2, 3]
    assert sha256(bytes.fromhex(records[2]["input"][2])) == sha256(originals["image3"])


def test_dg_check_and_launch_on_local_default(dagster_home, tmp_path):
    env = cli_env(dagster_home, SPARK_MASTER="local[2]")
    env["LAKE_URI"] = str(tmp_path / "lake")
    check = run_cli([str(BIN / "dg"), "check", "defs"], env, REPO)
    assert "All definitions loaded successfully" in check.stdout + check.stderr

    run_cli([str(BIN / "dg"), "launch", "--assets", "*"], env, REPO)
    lake = tmp_path / "lake"
    assert lance.dataset(str(lake / "images.lance")).count_rows() == 4  # shipped samples
    assert lance.dataset(str(lake / "multimodal.lance")).count_rows() == 4
    records = json.loads((lake / "training_data.json").read_text())
    assert [len(r["input"]) for r in records] == [2, 2, 3, 1]


def test_quickstart_prints_summary(dagster_home, tmp_path):
    env = cli_env(dagster_home, SPARK_MASTER="local[2]")
    proc = run_cli([sys.executable, "-m", "dagster_project.quickstart"], env, tmp_path)
    out = proc.stdout
    # a short report: one line per step, each warning once, the summary; nothing twice
    lines = [line for line in (out + proc.stderr).splitlines() if line.strip()]
    assert len(lines) <= 30, "\n".join(lines)
    assert len(set(lines)) == len(lines), "a line was printed twice"
    for noise in ("alembic", "No existing dataset", "fork-safe", "Setting default log level"):
        assert noise not in out + proc.stderr, noise
    steps = [line.split()[1] for line in out.splitlines() if re.match(r"\[\d/7\] ", line)]
    assert sorted(steps) == sorted(
        [
            "ingest_images",
            "ingest_texts",
            "multimodal_lance",
            "training_json",
            "training_llamafactory",
            "image_features",
            "curation",
        ]
    )
    assert "curation: 0 images and 0 documents excluded" in out  # the default policy
    assert out.count("RESNET50_WEIGHTS is not set") == 1  # said plainly, once
    assert "Pipeline finished" in out
    assert "first training batch: images [4, 3, 3, 224, 224]" in out
    assert "[[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]" in out
    outputs = ("images.lance", "texts.lance", "multimodal.lance", "training_data.json")
    for name in (*outputs, "image_features.lance"):
        assert str(tmp_path / "lake" / name) in out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines() if "  " in line}
    assert rows["image_lance"] == ["4", "2", "2"]  # rows, version (data + index), published
    assert rows["rejected_images"][0] == "0"
    assert rows["multimodal_lance"] == ["4", "2", "2"]
    assert rows["training_json"] == ["4", "-", "yes"]
    assert rows["training_llamafactory"] == ["4", "-", "yes"]
    assert (tmp_path / "lake" / "llamafactory" / "dataset_info.json").is_file()
    assert rows["image_features"] == ["4", "1", "1"]
    assert "weights random-init" in out and "4 computed in" in out

    # --verbose (make run VERBOSE=1): Dagster's full log, on a run that writes nothing
    again = run_cli(
        [sys.executable, "-m", "dagster_project.quickstart", "--verbose"], env, tmp_path
    )
    full = again.stdout + again.stderr
    assert "dagster - INFO" in full and "nothing to commit" in full
    assert "Pipeline finished" in again.stdout
