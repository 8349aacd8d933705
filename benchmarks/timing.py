"""A Lightning callback that times each epoch's training part and the whole epoch, shared by the benchmarks."""

from __future__ import annotations

import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(Callback):
    """``train_seconds``: first batch to last optimizer step; ``epoch_seconds``: also validation and figures.

    Lightning calls ``on_train_epoch_end`` after the epoch's validation, so the whole-epoch figure
    includes it; the training part stops at the last training batch.
    """

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        synchronize(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            synchronize(pl_module.device)
            self.train_seconds.append(time.perf_counter() - self._start)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        synchronize(pl_module.device)
        self.epoch_seconds.append(time.perf_counter() - self._start)
