"""Batches served straight from uint8 tensors that live on the training device.

FashionMNIST is 47 MB as uint8, so every split fits on any GPU and in any RAM. Indexing one tensor
and transforming the whole batch at once replaces the per-image PIL decode, ``ToTensor`` and the
DataLoader's collation, which is where most of a small model's epoch goes.

All randomness (the epoch's order and the augmentations) is a pure function of ``(seed, epoch, rank)``:
a resumed run sees exactly the batches an uninterrupted one would, given where in the epoch it stopped
(the loader's state, :mod:`fmnist_pl.data.epochs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch

from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.epochs import EpochSampler, ResumableEpoch
from fmnist_pl.pixels import Normalization, to_unit


class TeacherScoredBatch(NamedTuple):
    """A training batch that carries its teacher's logits, by name, after the images and labels."""

    images: torch.Tensor
    labels: torch.Tensor
    teacher_scores: torch.Tensor


class DeviceLoader(ResumableEpoch):
    """Iterates ``(images, labels)`` batches: images ``(B, 1, 28, 28)`` float32, labels int64, on the data's device.

    Args:
        images: uint8 ``(N, 28, 28)``, already on the device batches should be on.
        labels: int64 ``(N,)``, on the same device.
        order: which indices to visit, and in which order; exposed as ``sampler`` for Lightning.
        batch_size: images per batch; the last batch may be shorter (none is dropped).
        augmentations: applied to every image (training only).
        normalization: applied to every batch after scaling to [0, 1].
        teacher_scores: a teacher's logits for every image ``(N, classes)`` and for its mirror image
            (or None: without flips, or for a teacher that scores both alike), on the data's device:
            each batch is then a :class:`TeacherScoredBatch` with its images' logits (distillation),
            the mirrored ones for the flipped images. Only for augmentations that make stored or mirrored
            images.
    """

    # Lightning inspects a loader's ``sampler`` (calling its ``set_epoch``) and ``batch_sampler``.
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        order: EpochSampler,
        batch_size: int,
        augmentations: Augmentations = Augmentations(),
        normalization: Normalization = Normalization(),
        teacher_scores: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> None:
        if teacher_scores is not None and not augmentations.stored_or_mirrored:
            raise ValueError("teacher scores are for stored and mirrored images; these augmentations make others")
        self.teacher_scores = teacher_scores
        self.images = images
        self.labels = labels
        self.sampler = order
        self.batch_size = batch_size
        self.augmentations = augmentations
        self.normalization = normalization

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self._counted(self._batches())

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        images, labels, scores = self._epoch_pixels()
        for start in range(0, len(labels), self.batch_size):
            stop = start + self.batch_size
            inputs = to_inputs(images[start:stop], self.normalization)
            if scores is None:
                yield inputs, labels[start:stop]
            else:
                yield TeacherScoredBatch(inputs, labels[start:stop], scores[start:stop])

    def _epoch_pixels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The epoch's uint8 images in visiting order, augmented, their labels, and their teacher's
        scores if there are any.

        Built once per epoch with a few whole-epoch operations (one gather, then each augmentation
        over all the images), so each batch is a slice: on a 2-core CPU the per-batch gather and flip
        cost about 95 µs, a tenth of this MLP's training step. Uses one uint8 copy of the split
        (47 MB at most) while the epoch runs.
        """
        device = self.images.device
        indices = self.sampler.indices().to(device)
        images, labels = self.images.index_select(0, indices), self.labels.index_select(0, indices)
        mirrored = None
        if self.augmentations:
            # Drawn for the whole epoch, then cut, so a resumed epoch's images get what they would have got.
            order = self.sampler
            draws = self.augmentations.draws(order.seed, order.epoch, order.rank, len(order))[order.start() :]
            images = self.augmentations.apply_(images, draws)
            mirrored = self.augmentations.mirrored(draws)
        scores = None
        if self.teacher_scores is not None:
            plain, mirrors = self.teacher_scores
            scores = plain.index_select(0, indices)
            if mirrored is not None and mirrors is not None:
                scores = torch.where(mirrored.to(device).unsqueeze(1), mirrors.index_select(0, indices), scores)
        return images, labels, scores


def to_inputs(pixels: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """A batch of uint8 images ``(B, 28, 28)`` or ``(B, 1, 28, 28)`` as the network's float input
    ``(B, 1, 28, 28)``: scaled to [0, 1], then normalized. Both data paths end with it."""
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(1)
    return normalization.apply_(to_unit(pixels))
