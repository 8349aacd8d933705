"""The torchvision path's loader: a DataLoader whose collated uint8 batches end as the tensor path's do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.device_loader import to_inputs
from fmnist_pl.data.epochs import EpochSampler, ResumableEpoch
from fmnist_pl.pixels import Normalization


class TorchvisionLoader(ResumableEpoch, DataLoader):
    """A ``DataLoader`` over uint8 images ``(1, 28, 28)`` (torchvision's data set with ``PILToTensor``):
    each collated batch gets the augmentations and the normalization the tensor path applies, with
    the same draws for the same place in the epoch, and its place in the epoch is saved in checkpoints.

    Args:
        dataset, kwargs: as for ``DataLoader``.
        augmentations: applied to each batch (training only).
        normalization: applied to each batch after scaling to [0, 1].
        seed: the augmentations' seed, with the epoch and ``rank``.
        rank: this process's rank (its share of the epoch draws on its own).
    """

    def __init__(
        self,
        dataset: Dataset,
        augmentations: Augmentations = Augmentations(),
        normalization: Normalization = Normalization(),
        seed: int = 0,
        rank: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.augmentations = augmentations
        self.normalization = normalization
        self.seed = seed
        self.rank = rank

    def __iter__(self) -> Iterator[Any]:
        return self._counted(self._batches(super().__iter__()))

    def _batches(self, collated: Iterator[list[torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: the draws are made at the first batch, after Lightning's set_epoch.
        draws, position = None, 0
        if self.augmentations:
            # Lightning's DistributedSampler (under DDP) has an epoch too, and its length is this rank's share.
            epoch = getattr(self.sampler, "epoch", 0)
            draws = self.augmentations.draws(self.seed, epoch, self.rank, len(self.sampler))
            position = self.sampler.start() if isinstance(self.sampler, EpochSampler) else 0
        for pixels, labels in collated:
            if draws is not None:
                pixels = self.augmentations.apply_(pixels, draws[position : position + len(labels)])
                position += len(labels)
            yield to_inputs(pixels, self.normalization), labels
