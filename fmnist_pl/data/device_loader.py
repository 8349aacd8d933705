"""Batches served straight from uint8 tensors that live on the training device.

FashionMNIST is 47 MB as uint8, so every split fits on any GPU and in any RAM. Indexing one tensor
and transforming the whole batch at once replaces the per-image PIL decode, ``ToTensor`` and the
DataLoader's collation, which is where most of a small model's epoch goes.

All randomness (the epoch's order and the flips) is a pure function of ``(seed, epoch, rank)``:
a resumed run sees exactly the batches an uninterrupted one would, given where in the epoch it stopped
(the loader's state, :mod:`fmnist_pl.data.epochs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from fmnist_pl.data.epochs import EpochSampler, ResumableEpoch
from fmnist_pl.fashion_mnist import Normalization, to_unit


class DeviceLoader(ResumableEpoch):
    """Iterates ``(images, labels)`` batches: images ``(B, 1, 28, 28)`` float32, labels int64, on the data's device.

    Args:
        images: uint8 ``(N, 28, 28)``, already on the device batches should be on.
        labels: int64 ``(N,)``, on the same device.
        order: which indices to visit, and in which order; exposed as ``sampler`` for Lightning.
        batch_size: images per batch; the last batch may be shorter (none is dropped).
        flip: flip each image horizontally with probability 0.5 (training only).
        shift: move each image by a random whole number of pixels in [-shift, shift], rows and columns
            independently, filling with black (training only; 0: off).
        normalization: applied to every batch after scaling to [0, 1].
        teacher_scores: a teacher's logits for every image ``(N, classes)`` and for its mirror image
            (or None: without flips, or for a teacher that scores both alike), on the data's device:
            each batch then comes with its images' logits as a third element (distillation), the
            mirrored ones for the flipped images.
    """

    # Lightning inspects a loader's ``sampler`` (calling its ``set_epoch``) and ``batch_sampler``.
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        order: EpochSampler,
        batch_size: int,
        flip: bool = False,
        normalization: Normalization = Normalization(),
        shift: int = 0,
        teacher_scores: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> None:
        if teacher_scores is not None and shift:
            raise ValueError("teacher scores were computed for unshifted images; shifted ones need scoring per batch")
        self.teacher_scores = teacher_scores
        self.images = images
        self.labels = labels
        self.sampler = order
        self.batch_size = batch_size
        self.flip = flip
        self.normalization = normalization
        self.shift = shift

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self._counted(self._batches())

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        images, labels, scores = self._epoch_pixels()
        for start in range(0, len(labels), self.batch_size):
            stop = start + self.batch_size
            if scores is None:
                yield self._to_float(images[start:stop]), labels[start:stop]
            else:
                yield self._to_float(images[start:stop]), labels[start:stop], scores[start:stop]

    def _epoch_pixels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The epoch's uint8 images in visiting order, shifted and flipped, their labels, and their
        teacher's scores if there are any.

        Built once per epoch with a few whole-epoch operations (one gather, one masked flip, one copy
        per shift offset), so each batch is a slice: on a 2-core CPU the per-batch gather and flip
        cost about 95 µs, a tenth of this MLP's training step. Uses one uint8 copy of the split
        (47 MB at most) while the epoch runs.
        """
        device = self.images.device
        indices = self.sampler.indices().to(device)
        images, labels = self.images.index_select(0, indices), self.labels.index_select(0, indices)
        flips, offsets = self._augmentations(device)
        if offsets is not None:
            images = shift_images(images, offsets, self.shift)
        if flips is not None:
            flip_where(images, flips)
        scores = None
        if self.teacher_scores is not None:
            plain, mirrored = self.teacher_scores
            scores = plain.index_select(0, indices)
            if flips is not None and mirrored is not None:
                scores = torch.where(flips.unsqueeze(1), mirrored.index_select(0, indices), scores)
        return images, labels, scores

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalization.apply_(to_unit(images.unsqueeze(1)))

    def _augmentations(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The flip mask ``(n,)`` and shifts ``(n, 2)`` (rows, columns) of the epoch's ``n`` images still
        to visit, or None where off."""
        if not self.flip and not self.shift:
            return None, None
        # One draw per epoch, from a generator of its own: the global RNG is left untouched, and the
        # augmentations depend only on (seed, epoch, rank). Drawn for the whole epoch, then cut, so a
        # resumed epoch's images get what they would have got.
        order = self.sampler
        seed = (order.seed + order.epoch) * 1_000_003 + order.rank
        generator = torch.Generator(device=device).manual_seed(seed)
        count, start = len(order), order.start()
        flips = torch.rand(count, generator=generator, device=device)[start:] < 0.5
        offsets = None
        if self.shift:
            offsets = torch.randint(-self.shift, self.shift + 1, (count, 2), generator=generator, device=device)
            offsets = offsets[start:]
        return (flips if self.flip else None), offsets


def flip_where(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror, in place, the images ``(N, ..., W)`` whose ``mask`` entry is True, left to right; return them."""
    chosen = mask.nonzero().flatten()
    images[chosen] = images[chosen].flip(-1)
    return images


def shift_images(images: torch.Tensor, offsets: torch.Tensor, limit: int) -> torch.Tensor:
    """Move each image ``(N, H, W)`` down by ``offsets[:, 0]`` and right by ``offsets[:, 1]`` pixels.

    Offsets lie in [-limit, limit]. Pixels moved in from outside are 0 (black, FashionMNIST's
    background): the result equals torchvision's ``RandomCrop(size, padding=limit)`` with the crop's
    corner at ``limit - offsets``. One slice copy per distinct offset, on the uint8 pixels: about
    three times faster on a CPU than one gather of every pixel.
    """
    height, width = images.shape[-2:]
    padded = torch.nn.functional.pad(images, (limit, limit, limit, limit))
    shifted = torch.empty_like(images)
    side = 2 * limit + 1
    kinds = (offsets[:, 0] + limit) * side + (offsets[:, 1] + limit)
    for kind in range(side * side):
        which = (kinds == kind).nonzero().flatten()
        if len(which):
            top, left = limit - (kind // side - limit), limit - (kind % side - limit)
            shifted[which] = padded[which, top : top + height, left : left + width]
    return shifted
