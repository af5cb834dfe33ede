"""ElasticSampler: disjoint shares, deterministic epochs, resume on another number of ranks."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from helpers import photo_variant, write_published
from torchdata.stateful_dataloader import StatefulDataLoader

from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.dataset import VLMDataset
from vlm_lake.training.sampler import ElasticSampler


@pytest.mark.parametrize(("length", "world"), [(0, 2), (1, 3), (10, 2), (11, 4), (97, 8)])
def test_shares_are_disjoint_and_cover_each_epoch(length: int, world: int) -> None:
    for epoch in (0, 1):
        shares = []
        for rank in range(world):
            sampler = ElasticSampler(length, seed=3, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            shares.append(list(sampler))
        assert sorted(itertools.chain(*shares)) == list(range(length))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    first = ElasticSampler(50, seed=3, rank=0, world_size=1)
    again = ElasticSampler(50, seed=3, rank=0, world_size=1)
    assert list(first) == list(again)  # deterministic per (seed, epoch)
    again.set_epoch(1)
    assert list(first) != list(again)


@pytest.mark.parametrize(("old", "new"), [(2, 2), (2, 1), (1, 3), (4, 3)])
def test_a_state_in_step_resumes_on_any_number_of_ranks(old: int, new: int) -> None:
    length, steps = 23, 3
    samplers = [ElasticSampler(length, seed=9, rank=r, world_size=old) for r in range(old)]
    iterators = [iter(s) for s in samplers]
    seen = Counter(next(it) for _ in range(steps) for it in iterators)
    state = samplers[0].state_dict()
    assert state["consumed"] == steps * old
    for rank in range(new):
        resumed = ElasticSampler(length, seed=9, rank=rank, world_size=new)
        resumed.load_state_dict(state)
        seen.update(resumed)
    assert sorted(seen) == list(range(length)) and set(seen.values()) == {1}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank=2 is not allowed with world_size=2"):
        ElasticSampler(5, rank=2, world_size=2)
    sampler = ElasticSampler(5, seed=1)
    with pytest.raises(ValueError, match="a state of seed 2 cannot resume"):
        sampler.load_state_dict({"epoch": 0, "seed": 2, "consumed": 0})


def test_stateful_dataloader_with_workers_resumes_mid_epoch(tmp_path: Any) -> None:
    """StatefulDataLoader + 2 forkserver workers + our collate: a state taken with batches in
    flight resumes exactly where the training loop was."""
    rows = [
        {
            "docid": f"d{i}",
            "text": f"t{i}",
            "image_id1": "x",
            "image1": photo_variant(i, size=(30, 20)),
            "image_id2": None,
            "image2": None,
            "image_id3": None,
            "image3": None,
        }
        for i in range(13)
    ]
    uri = str(tmp_path / "mm.lance")
    write_published(pa.Table.from_pylist(rows, schema=multimodal_schema(3)), uri)

    def make() -> StatefulDataLoader:
        ds = VLMDataset(uri, image_size=16)
        sampler = ElasticSampler(len(ds), seed=4)
        kwargs = VLMDataset.loader_kwargs()
        return StatefulDataLoader(ds, batch_size=2, sampler=sampler, num_workers=2, **kwargs)

    full = [t for texts, _ in make() for t in texts]
    assert sorted(full) == sorted(f"t{i}" for i in range(13))
    loader, seen = make(), []
    for step, (texts, _) in enumerate(loader):
        seen += texts
        if step == 2:
            state = loader.state_dict()
            break
    resumed = make()
    resumed.load_state_dict(state)
    assert seen + [t for texts, _ in resumed for t in texts] == full
