"""Random transforms whose draws depend on (seed, epoch, batch), not on what ran before them."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

Key = tuple[int, int, int]  # (epoch, position in the epoch, data set index), from a keyed EpochSampler


class SeededAugmentation(Dataset):
    """Wraps a data set with random (torchvision) transforms so each batch draws them from a torch
    generator seeded by ``(seed, epoch, position of the batch's first image)``.

    torchvision's random transforms draw from the global generator. In the main process
    (``num_workers=0``) that generator also feeds dropout, and Lightning fetches each batch before
    the previous training step runs, so a fit resumed mid-epoch would draw other flips than an
    uninterrupted one. Seeding per batch (``__getitems__``, which the DataLoader calls once a
    batch) makes them a function of the batch alone, and puts the global state back afterwards;
    about 0.2 ms a batch. Plain integer keys (Lightning's ``DistributedSampler`` under DDP) load
    as the wrapped data set does.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | Key) -> Any:
        return self.dataset[key[2] if isinstance(key, tuple) else key]

    def __getitems__(self, keys: list[int] | list[Key]) -> list[Any]:
        if not keys or not isinstance(keys[0], tuple):
            return [self.dataset[key] for key in keys]
        epoch, position, _ = keys[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed + epoch) * 1_000_003 + position)
            return [self.dataset[index] for _, _, index in keys]
