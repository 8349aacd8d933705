"""FashionMNIST's facts (classes, image shape, pixel statistics) and the rule that turns its pixels into inputs.

The one small module that the networks, the data module, the figures and export all import: it
needs nothing but torch, so none of them depends on another for a constant or for normalization.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
INPUT_SIZE: int = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # The tutorial's own names, in label order.
    "ko": ("티셔츠/윗옷", "바지", "스웨터", "드레스", "코트", "샌들", "셔츠", "운동화", "가방", "앵클부츠"),
}
NUM_CLASSES: int = len(CLASS_NAMES["en"])

# Mean and standard deviation of the 60,000 training images scaled to [0, 1].
FASHION_MNIST_MEAN: float = 0.2860
FASHION_MNIST_STD: float = 0.3530

TRAIN_SIZE: int = 60_000


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) as float32 in [0, 1]: the scale every model input starts from."""
    return pixels.float().div_(255)


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` on [0, 1] images; ``Normalization()`` (mean 0, std 1) is none at all."""

    mean: float = 0.0
    std: float = 1.0

    def apply_(self, images: torch.Tensor) -> torch.Tensor:
        """Normalize float ``images`` in place; return them (untouched when there is none)."""
        if self.mean == 0.0 and self.std == 1.0:
            return images
        return images.sub_(self.mean).div_(self.std)

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """Back to the [0, 1] scale (a new tensor)."""
        return images * self.std + self.mean


def normalization(hparams: Mapping[str, Any]) -> Normalization:
    """The normalization a data module with these hyperparameters applies.

    The one place for this rule: the data module, the figures (to undo it for display), export (to
    fold it into the model) and distillation (to hand the teacher raw images) all ask here. Missing
    keys take the data module's own defaults, so a checkpoint that stored only some of them means
    what it meant when it was written.
    """
    if not hparams.get("normalize", True):
        return Normalization()
    return Normalization(hparams.get("mean", FASHION_MNIST_MEAN), hparams.get("std", FASHION_MNIST_STD))
