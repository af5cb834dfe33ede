"""Run under ``torchrun``: what each rank reads, gathered on rank 0 and written as JSON.

``python -m torch.distributed.run --nproc_per_node N torchrun_loader.py URI OUT PHASE``:

* ``epochs``: two full epochs; ``OUT/epochs.json`` = ``[[texts of rank r] per rank] per epoch``.
* ``save``: two batches of epoch 0 per rank, then the loader's ``state_dict`` (rank 0's) to
  ``OUT/state.pt`` and the texts read to ``OUT/before.json``.
* ``resume``: a fresh loader loads ``OUT/state.pt`` and reads the rest of the epoch;
  ``OUT/after-<N>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader

from vlm_lake.training.dataset import VLMDataset, collate
from vlm_lake.training.sampler import ElasticSampler


def _loader(uri: str) -> tuple[StatefulDataLoader, ElasticSampler]:
    dataset = VLMDataset(uri, image_size=16)
    sampler = ElasticSampler(len(dataset), seed=1)
    return StatefulDataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate), sampler


def _gather(texts: list[str]) -> list[list[str]]:
    shares: list[list[str]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(shares, texts)
    return shares


def main(uri: str, out: Path, phase: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader, sampler = _loader(uri)
    if phase == "epochs":
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(_gather([t for texts, _ in loader for t in texts]))
        if rank == 0:
            (out / "epochs.json").write_text(json.dumps(epochs))
    elif phase == "save":
        read: list[str] = []
        for step, (texts, images) in enumerate(loader):
            assert images.shape[1:] == (3, 3, 16, 16)
            read += texts
            if step == 1:
                break
        state = loader.state_dict()
        shares = _gather(read)
        if rank == 0:
            torch.save(state, out / "state.pt")
            (out / "before.json").write_text(json.dumps(shares))
    else:
        loader.load_state_dict(torch.load(out / "state.pt", weights_only=False))
        shares = _gather([t for texts, _ in loader for t in texts])
        if rank == 0:
            (out / f"after-{dist.get_world_size()}.json").write_text(json.dumps(shares))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
