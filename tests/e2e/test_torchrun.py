"""A loader for distributed training, under torchrun with 2 processes (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import free_port, photo_variant, write_published

from vlm_lake.tables.contracts import multimodal_schema

DOCS = 11  # odd: the two ranks' shares differ by one
SCRIPT = Path(__file__).with_name("torchrun_loader.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = []
    for i in range(DOCS):
        rows.append(
            {
                "docid": f"d{i}",
                "text": f"document {i}",
                "image_id1": f"i{i}",
                "image1": photo_variant(i, size=(24, 20)),
                "image_id2": None,
                "image2": None,
                "image_id3": None,
                "image3": None,
            }
        )
    uri = str(tmp_path_factory.mktemp("torchrun") / "multimodal.lance")
    write_published(pa.Table.from_pylist(rows, schema=multimodal_schema(3)), uri)
    return uri


def _torchrun(procs: int, lake: str, out: Path, phase: str) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(procs),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(SCRIPT),
        lake,
        str(out),
        phase,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_ranks_read_disjoint_shares_that_cover_each_epoch(lake: str, tmp_path: Path) -> None:
    _torchrun(2, lake, tmp_path, "epochs")
    epochs = json.loads((tmp_path / "epochs.json").read_text())
    everything = sorted(f"document {i}" for i in range(DOCS))
    for shares in epochs:
        assert not set(shares[0]) & set(shares[1])  # disjoint
        assert sorted(shares[0] + shares[1]) == everything  # each sample once
        assert sorted(len(s) for s in shares) == [5, 6]
    assert epochs[0] != epochs[1]  # another order in epoch 2


@pytest.mark.parametrize("procs", [2, 1])
def test_a_mid_epoch_state_resumes_on_two_or_one_process(
    lake: str, tmp_path: Path, procs: int
) -> None:
    _torchrun(2, lake, tmp_path, "save")
    before = json.loads((tmp_path / "before.json").read_text())
    assert [len(s) for s in before] == [4, 4]  # two batches of two on each rank
    _torchrun(procs, lake, tmp_path, "resume")
    after = json.loads((tmp_path / f"after-{procs}.json").read_text())
    seen = Counter(t for share in before + after for t in share)
    assert sorted(seen) == sorted(f"document {i}" for i in range(DOCS))
    assert set(seen.values()) == {1}  # nothing repeated, nothing skipped
