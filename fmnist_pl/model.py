"""The networks, no Lightning in them: the tutorial's fully connected MLP, and a small CNN (the teacher)."""

import math
from collections.abc import Sequence

import torch
from torch import nn


def fully_connected(width: int, hidden_sizes: Sequence[int], num_classes: int, dropout: float) -> list[nn.Module]:
    """Linear -> ReLU -> Dropout for each hidden layer (no Dropout at 0), then a Linear to the logits."""
    layers: list[nn.Module] = []
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return layers


class MLP(nn.Module):
    """Flatten, then Linear -> ReLU -> Dropout for each hidden layer, then a Linear to the logits.

    With ``hidden_sizes=(256, 128)`` and ``dropout=0.2`` this is the tutorial's second network; with
    ``dropout=0`` its first (the Dropout layers are then left out entirely).
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), *fully_connected(input_size, hidden_sizes, num_classes, dropout))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images of any shape ``(N, ...)`` with ``input_size`` values each to logits ``(N, num_classes)``."""
        return self.layers(images)


class CNN(nn.Module):
    """Two 3x3 convolution blocks (convolution, batch norm, ReLU, 2x2 max pooling), then fully
    connected layers: Linear -> ReLU -> Dropout for each of ``hidden_sizes``, then a Linear to the logits.

    A network of the kind that reaches 92-94% on FashionMNIST, used as the teacher the MLP is
    distilled from (``configs/teacher.yaml``); ``channels`` are the two blocks' widths.
    """

    def __init__(
        self, hidden_sizes: Sequence[int], num_classes: int, dropout: float = 0.0, channels: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        layers.append(nn.Flatten())
        width *= (28 // 2 ** len(channels)) ** 2
        self.layers = nn.Sequential(*layers, *fully_connected(width, hidden_sizes, num_classes, dropout))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, 1, 28, 28)`` to logits ``(N, num_classes)``."""
        return self.layers(images)


class FlipAveraged(nn.Module):
    """``net`` applied to each image and to its mirror image, the two predicted distributions averaged.

    Returns log-probabilities ``(N, num_classes)``: their softmax is the average distribution, and
    cross-entropy on them is the loss of that average. Test-time augmentation for a network trained
    with horizontal flips; twice the inference cost.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        both = torch.stack([self.net(images).log_softmax(dim=1), self.net(images.flip(-1)).log_softmax(dim=1)])
        return both.logsumexp(dim=0) - math.log(2)


def compile_network(net: nn.Module, mode: str, device: torch.device) -> None:
    """Compile ``net`` in place as ``mode`` says (``auto``: CUDA graphs on CUDA, eager elsewhere); idempotent.

    In place, so the state_dict keys (and checkpoints) are the same as in eager mode.
    """
    if mode == "auto":
        mode = "reduce-overhead" if device.type == "cuda" else "eager"
        # "auto" promises to work everywhere: where compiling or capturing fails (no Triton, an
        # unsupported GPU), dynamo then runs the network eagerly instead of raising.
        torch._dynamo.config.suppress_errors = True
    if mode != "eager" and getattr(net, "_compiled_call_impl", None) is None:
        net.compile(mode=mode, dynamic=False)
