"""The networks, no Lightning in them: the tutorial's fully connected MLP, a small CNN (the teacher), and
the wrappers that evaluation and export put around either.

Any ``nn.Module`` that maps images ``(N, 1, 28, 28)`` to scores ``(N, classes)`` can be the
classifier's ``--model.net``; these two are the ones the configs use.
"""

import importlib.util
import math
from collections.abc import Sequence

import torch
from torch import nn

from fmnist_pl.errors import BadArgument
from fmnist_pl.pixels import IMAGE_SHAPE, INPUT_SIZE, Normalization


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


def check_layer_sizes(owner: type, name: str, sizes: Sequence[int]) -> None:
    """Raise ``BadArgument`` unless ``owner``'s argument ``name``, ``sizes``, is a non-empty list of integers >= 1."""
    if not sizes or min(sizes) < 1:
        raise BadArgument(owner, name, f"must be a non-empty list of integers >= 1, got {list(sizes)}")


def check_dropout(owner: type, dropout: float) -> None:
    """Raise ``BadArgument`` unless ``owner``'s ``dropout`` is a probability below 1."""
    if not 0.0 <= dropout < 1.0:
        raise BadArgument(owner, "dropout", f"must be in [0.0, 1.0), got {dropout}")


class MLP(nn.Module):
    """Flatten, then Linear -> ReLU -> Dropout for each hidden layer, then a Linear to the logits.

    With ``hidden_sizes=(256, 128)`` and ``dropout=0.2`` this is the tutorial's second network; with
    ``dropout=0`` its first (the Dropout layers are then left out entirely).

    Args:
        hidden_sizes: Width of each hidden layer, input side first.
        dropout: Probability of zeroing each hidden unit in training, in [0, 1); 0 leaves Dropout out.
        input_size: Values per image (784 for FashionMNIST's 28x28).
        num_classes: Number of classes scored (the data set's: 10 for FashionMNIST and MNIST).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        input_size: int = INPUT_SIZE,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        check_layer_sizes(MLP, "hidden_sizes", hidden_sizes)
        check_dropout(MLP, dropout)
        self.layers = nn.Sequential(nn.Flatten(), *fully_connected(input_size, hidden_sizes, num_classes, dropout))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images of any shape ``(N, ...)`` with ``input_size`` values each to logits ``(N, num_classes)``."""
        return self.layers(images)


class CNN(nn.Module):
    """Two 3x3 convolution blocks (convolution, batch norm, ReLU, 2x2 max pooling), then fully
    connected layers: Linear -> ReLU -> Dropout for each of ``hidden_sizes``, then a Linear to the logits.

    A network of the kind that reaches 92-94% on FashionMNIST, used as the teacher the MLP is
    distilled from (``configs/teacher.yaml``).

    Args:
        hidden_sizes: Width of each fully connected hidden layer after the convolutions.
        dropout: Dropout after each fully connected hidden layer, in [0, 1).
        channels: The convolution blocks' widths; each block halves the image's height and width.
        num_classes: Number of classes scored (the data set's: 10 for FashionMNIST and MNIST).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256,),
        dropout: float = 0.0,
        channels: Sequence[int] = (32, 64),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        check_layer_sizes(CNN, "hidden_sizes", hidden_sizes)
        check_layer_sizes(CNN, "channels", channels)
        check_dropout(CNN, dropout)
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


class Normalized(nn.Module):
    """A network with its input normalization in front: raw [0, 1] images in, its scores out.

    What export writes and what a teacher scores with: the statistics travel with the network, as
    buffers, so its user needs nothing else.
    """

    def __init__(self, net: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(normalization.mean))
        self.register_buffer("std", torch.tensor(normalization.std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


@torch.no_grad()
def output_width(net: nn.Module) -> int:
    """How many scores ``net`` gives an image: it is run once on a blank image, in eval mode (so batch
    norm statistics stay as they are), and left in the mode it was in."""
    training = net.training
    net.eval()
    try:
        return net(torch.zeros(1, *IMAGE_SHAPE)).shape[-1]
    finally:
        net.train(training)


def compile_network(net: nn.Module, mode: str, device: torch.device) -> bool:
    """Compile ``net`` in place as ``mode`` says; return whether it was compiled.

    ``auto``: CUDA graphs (``reduce-overhead``) on a CUDA GPU that torch's compiler supports (Triton
    installed, compute capability 7.0 or newer), eager everywhere else: on the CPU compiling costs
    more than it saves for a model this small. In place, so the state_dict keys (and checkpoints)
    are the same as in eager mode.
    """
    if mode == "auto":
        mode = "reduce-overhead" if _compiler_supports(device) else "eager"
    if mode == "eager":
        return False
    net.compile(mode=mode, dynamic=False)
    return True


def _compiler_supports(device: torch.device) -> bool:
    if device.type != "cuda" or importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.get_device_capability(device) >= (7, 0)
