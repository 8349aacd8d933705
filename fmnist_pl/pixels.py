"""The images every data set here has (28x28, one gray channel) and the rule that turns their pixels into inputs.

The one small module that the networks, the data module, the figures and export all import: it
needs nothing but torch, so none of them depends on another for a constant or for normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
INPUT_SIZE: int = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


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
