"""The order of an epoch, and training loaders that know their place in it, so that a fit stopped
mid-epoch goes on from there.

Lightning's fit loop stores the ``state_dict()`` of a training loader that has one in every
checkpoint and hands it back through ``load_state_dict()`` on resume (and then does not warn that
the loader is not resumable). Lightning fetches no batch ahead from a loader with a length, so the
batches handed out are the batches trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch


class EpochSampler:
    """The indices one process visits in one epoch, like ``DistributedSampler``.

    Shuffled with a generator seeded by ``seed + epoch``; process ``rank`` of ``world_size`` takes
    every ``world_size``-th index from position ``rank``, so the shards are disjoint and together cover
    the epoch. With ``even_shards`` (training under DDP, where every process must take the same number
    of steps) the permutation is first cut to a multiple of ``world_size``: at most ``world_size - 1``
    examples sit out an epoch, different ones each epoch. Evaluation keeps every index.

    Lightning calls ``set_epoch`` at the start of every epoch, as it does for a DataLoader's sampler;
    ``len`` stays the whole epoch's after ``resume_at``, as Lightning counts the resumed epoch's
    batches from where it stopped.
    Iterating yields the indices as ints, so it also serves as a ``DataLoader``'s sampler (the
    torchvision path), where it replaces ``RandomSampler``: that one draws its order from the global
    generator when the loader's iterator is made, which a resumed run does at another moment.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = False,
    ) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.epoch = 0
        self.resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, done: int) -> None:
        """Go on with ``epoch`` after its first ``done`` indices (a fit resumed mid-epoch)."""
        self.resume = (epoch, done)
        self.epoch = epoch

    def start(self) -> int:
        """How many of the current epoch's indices were visited before a resume (0 on other epochs)."""
        return self.resume[1] if self.resume is not None and self.resume[0] == self.epoch else 0

    def indices(self) -> torch.Tensor:
        """This process's indices for the current epoch still to visit (int64, on the CPU)."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        if self.even_shards:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size][self.start() :]

    def __iter__(self) -> Iterator[int]:
        # A generator: the order is computed at the first batch, after Lightning's set_epoch.
        yield from self.indices().tolist()

    def __len__(self) -> int:
        total = self.size - self.size % self.world_size if self.even_shards else self.size
        return len(range(self.rank, total, self.world_size))


T = TypeVar("T")


class ResumableEpoch:
    """Mixin for a loader whose ``sampler`` is an :class:`EpochSampler` and whose ``__iter__`` passes
    its batches through :meth:`_counted`: its state is the epoch and the batches of it handed out."""

    sampler: Any
    batch_size: int
    _served: int = 0

    def state_dict(self) -> dict[str, int]:
        if not isinstance(self.sampler, EpochSampler):
            return {}  # Lightning's DistributedSampler (the torchvision path under DDP): epochs restart
        return {"epoch": self.sampler.epoch, "batches_done": self._served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if "epoch" in state_dict and isinstance(self.sampler, EpochSampler):
            self.sampler.resume_at(int(state_dict["epoch"]), int(state_dict["batches_done"]) * self.batch_size)

    def _counted(self, batches: Iterable[T]) -> Iterator[T]:
        start = self.sampler.start() if isinstance(self.sampler, EpochSampler) else 0
        self._served = start // self.batch_size if start else 0  # Lightning's predict loader has no batch_size
        for batch in batches:
            self._served += 1
            yield batch
