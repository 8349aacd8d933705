"""Mixup: train on mixtures of two images against the same mixture of their labels."""

from __future__ import annotations

import torch
from torch.nn import functional as F


class Mixup:
    """A batch transform: ``lam * a + (1 - lam) * b`` for each image ``a`` and a partner ``b`` from the
    same batch, with ``lam ~ Beta(alpha, alpha)`` drawn once per batch, and the same mixture of their
    one-hot labels as soft targets (what ``F.cross_entropy`` takes as class probabilities).

    Cross-entropy is linear in its target, so the loss on the soft targets equals
    ``lam * CE(scores, a) + (1 - lam) * CE(scores, b)``, label smoothing included.

    Args:
        alpha: Parameter of the Beta distribution; above 0.
        num_classes: Number of classes of the one-hot labels.
    """

    def __init__(self, alpha: float, num_classes: int) -> None:
        self.beta = torch.distributions.Beta(alpha, alpha)
        self.num_classes = num_classes

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed images and their soft targets ``(N, num_classes)``."""
        lam = self.beta.sample().to(images.device)
        partner = torch.randperm(len(targets), device=images.device)
        one_hot = F.one_hot(targets, self.num_classes).to(images.dtype)
        return lam * images + (1 - lam) * images[partner], lam * one_hot + (1 - lam) * one_hot[partner]
