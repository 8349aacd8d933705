"""The part of the service that runs in LitServe's inference workers: batches of 28x28 images in,
class probabilities out.

Pictures are decoded in the HTTP process (:mod:`fmnist_pl.serve.routes`), so a worker receives 784
bytes a request and a bad picture never reaches a batch, where LitServe would fail every request of
the batch with its error. A worker imports torch and this module only: it starts again in seconds
when LitServe restarts it.
"""

from __future__ import annotations

import signal
from typing import Any

import litserve as ls
import torch
from torch import nn

from fmnist_pl.pixels import IMAGE_SHAPE, to_unit


class FashionAPI(ls.LitAPI):
    """A network over raw [0, 1] images (its normalization inside it), served in dynamic batches.

    A request's payload is ``{"pixels": bytes}``: the picture as the model sees it, 28x28 uint8,
    row by row. Its response is ``{"probabilities": [10 floats, class order], "batch_size": N}``,
    N being how many requests the network ran together with it.
    """

    def __init__(self, network: nn.Module, max_batch_size: int = 32, batch_timeout: float = 0.001) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.network = network

    def setup(self, device: str) -> None:
        # Ctrl-C reaches every process of the terminal's group: the main process drains the HTTP
        # servers first and stops the workers last, so the requests in flight are still answered.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.device_of_inputs = torch.device(device)
        self.network = self.network.to(self.device_of_inputs).eval()

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> torch.Tensor:
        pixels = torch.frombuffer(bytearray(request["pixels"]), dtype=torch.uint8)
        return to_unit(pixels.reshape(IMAGE_SHAPE))

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor | tuple[list[float], int]:
        """Probabilities ``(N, 10)`` for a batch; with ``max_batch_size`` 1 LitServe hands over one
        image and takes back its single response."""
        alone = images.dim() == len(IMAGE_SHAPE)
        images = (images[None] if alone else images).to(self.device_of_inputs)
        probabilities = self.network(images).softmax(dim=1).cpu()
        return (probabilities[0].tolist(), 1) if alone else probabilities

    def unbatch(self, output: torch.Tensor) -> list[tuple[list[float], int]]:
        return [(row, len(output)) for row in output.tolist()]

    def encode_response(self, output: tuple[list[float], int], **kwargs: Any) -> dict[str, Any]:
        probabilities, batch_size = output
        return {"probabilities": probabilities, "batch_size": batch_size}
