"""The training augmentations: one batch operation on uint8 pixels that both data paths apply.

Each augmentation draws its random choices for a whole epoch at once, from a CPU generator seeded by
``(seed, epoch, rank)``, and applies them to a batch of images given the batch's place in the epoch.
The tensor path applies them to the whole epoch in one go, the torchvision path to each collated
batch, ``show --augment`` to the images it shows: the same draws give the same pixels everywhere, on
any device, and a fit resumed mid-epoch gets the rest of the epoch's draws. No global generator is
touched, so dropout and mixup draw what they would draw without augmentations.

To add one: a class with ``draw`` and ``apply_`` like :class:`Flip`, and a line in
:meth:`Augmentations.of`. :attr:`Augmentations.stored_or_mirrored` knows flips alone, so any other
augmentation turns the teacher-score cache off by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class Augmentation(Protocol):
    """A random change of images ``(N, ..., H, W)`` of uint8 pixels, one independent draw per image."""

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """The random choices of ``count`` images, first axis one per image (on the CPU)."""

    def apply_(self, pixels: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """Change ``pixels`` by their ``choices`` (in place where it can); return them."""


@dataclass(frozen=True)
class Flip:
    """Mirror an image left to right with probability 0.5."""

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(count, generator=generator) < 0.5

    def apply_(self, pixels: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        chosen = choices.to(pixels.device).nonzero().flatten()
        pixels[chosen] = pixels[chosen].flip(-1)
        return pixels


@dataclass(frozen=True)
class Shift:
    """Move an image by a whole number of pixels in [-limit, limit] down and across, independently; the
    pixels moved in are black (the background), as torchvision's ``RandomCrop(28, padding=limit)`` does."""

    limit: int

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(-self.limit, self.limit + 1, (count, 2), generator=generator)

    def apply_(self, pixels: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        return shift_images(pixels, choices.to(pixels.device), self.limit)


class Draws:
    """One epoch's random choices of every augmentation, for the images in visiting order."""

    def __init__(self, choices: Sequence[torch.Tensor]) -> None:
        self.choices = tuple(choices)

    def __getitem__(self, images: slice) -> Draws:
        """The choices of the epoch's images ``images`` (a slice of the visiting order)."""
        return Draws([choice[images] for choice in self.choices])


@dataclass(frozen=True)
class Augmentations:
    """The augmentations training applies, in order; none at all is ``Augmentations()``."""

    steps: tuple[Augmentation, ...] = ()

    @classmethod
    def of(cls, flip: bool = False, shift: int = 0) -> Augmentations:
        """The data module's options as augmentations: flip first, then shift (the tutorial's order)."""
        return cls((*([Flip()] if flip else []), *([Shift(shift)] if shift else [])))

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def stored_or_mirrored(self) -> bool:
        """Whether every image they make is a stored image or its mirror image: what a cache of a
        teacher's scores for those two may assume. True only for flips (or nothing)."""
        return all(isinstance(step, Flip) for step in self.steps)

    @property
    def mirrors(self) -> bool:
        """Whether they mirror some images (a cache then needs the teacher's scores of mirror images too)."""
        return any(isinstance(step, Flip) for step in self.steps)

    def mirrored(self, draws: Draws) -> torch.Tensor | None:
        """Which images the draws mirror (bool, one per image), or None without flips."""
        return next((choice for step, choice in zip(self.steps, draws.choices) if isinstance(step, Flip)), None)

    def draws(self, seed: int, epoch: int, rank: int, count: int) -> Draws:
        """The choices for the ``count`` images process ``rank`` visits in ``epoch``: a function of those
        alone (drawn on the CPU, so every device sees the same)."""
        generator = torch.Generator().manual_seed((seed + epoch) * 1_000_003 + rank)
        return Draws([step.draw(count, generator) for step in self.steps])

    def apply_(self, pixels: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Augment uint8 ``pixels`` ``(N, ..., 28, 28)`` by their ``draws`` (in place where it can); return them."""
        for step, choices in zip(self.steps, draws.choices, strict=True):
            pixels = step.apply_(pixels, choices)
        return pixels


def shift_images(images: torch.Tensor, offsets: torch.Tensor, limit: int) -> torch.Tensor:
    """Move each image ``(N, ..., H, W)`` down by ``offsets[:, 0]`` and right by ``offsets[:, 1]`` pixels.

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
            shifted[which] = padded[which, ..., top : top + height, left : left + width]
    return shifted
