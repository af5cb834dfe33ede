"""A sampler for distributed training that resumes exactly, also on another number of ranks.

Each epoch is one permutation of the dataset, drawn from ``(seed, epoch)``: the same on
every rank, different from one epoch to the next. Rank ``r`` of ``W`` takes positions
``r, r + W, r + 2W...`` of what is left of it, so the ranks' shares are disjoint and
together cover every sample once per epoch (no padding: shares differ by one at most).

The state is global: ``consumed``, the length of the permutation's prefix that every rank
has read, which is ``start + yielded x W`` when the ranks are in step (a state taken at the
same training step on every rank, as data-parallel training does). Loaded into a sampler
of any number of ranks, the rest of the permutation is shared again: nothing is read twice
or skipped. It follows torchdata's ``Stateful`` protocol (``state_dict`` /
``load_state_dict``), so ``torchdata.stateful_dataloader.StatefulDataLoader`` saves and
restores it with the batches its workers have in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ElasticSampler(Sampler[int]):
    """Deterministic shuffled shares per rank, with a resumable global position.

    Args:
        length: Samples in the dataset (``len(dataset)``).
        seed: Seed of the permutations (the same on every rank).
        shuffle: Permute each epoch (False: dataset order).
        rank: This rank (default: ``torch.distributed``'s, else 0).
        world_size: Ranks (default: ``torch.distributed``'s, else 1).
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        default_rank, default_world = _world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank={self.rank!r} is not allowed with world_size={self.world_size!r}; "
                "expected 0 <= rank < world_size"
            )
        if length < 0:
            raise ValueError(f"length={length!r} must be a number of samples (>= 0)")
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch = 0
        self.start = 0  # global prefix of this epoch's permutation already read
        self.yielded = 0  # samples this rank yielded since ``start``

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (call before iterating, as with ``DistributedSampler``)."""
        if epoch != self.epoch:
            self.epoch, self.start, self.yielded = epoch, 0, 0

    def permutation(self) -> torch.Tensor:
        """This epoch's order of all samples (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.length)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=generator)

    def _share(self) -> torch.Tensor:
        return self.permutation()[self.start :][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        for position in self._share()[self.yielded :].tolist():
            self.yielded += 1
            yield int(position)
        # the epoch is done: the next iteration (same epoch) starts it again
        self.start, self.yielded = 0, 0

    def __len__(self) -> int:
        return max(0, len(self._share()) - self.yielded)

    def state_dict(self) -> dict[str, Any]:
        """The global position: epoch, seed, and the prefix every rank has read."""
        consumed = min(self.length, self.start + self.yielded * self.world_size)
        return {"epoch": self.epoch, "seed": self.seed, "consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (taken on any number of ranks).

        Raises:
            ValueError: The state was taken with another seed.
        """
        if state["seed"] != self.seed:
            raise ValueError(
                f"a state of seed {state['seed']!r} cannot resume a sampler of seed {self.seed!r}"
            )
        self.epoch, self.start, self.yielded = int(state["epoch"]), int(state["consumed"]), 0
