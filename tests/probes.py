"""Callbacks that inject faults into a real CLI run, given with ``--trainer.callbacks+=tests.probes.NAME``.

They live in a module of their own because the run is a subprocess: pytest cannot reach into it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class KillAt(Callback):
    """SIGKILL this process at the start of training batch ``batch`` of epoch ``epoch``: a crash
    with no chance to clean up, like the out-of-memory killer or a lost node."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(Callback):
    """Send this process a signal (SIGTERM by default: what SLURM, Kubernetes or ``kill`` send to
    stop a job) at the start of batch ``batch`` of epoch ``epoch`` of training or, with
    ``evaluation``, of validation, test or predict. The batch in progress still finishes."""

    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM", evaluation: bool = False) -> None:
        self.epoch = epoch
        self.batch = batch
        self.signal = signal.Signals[name]
        self.evaluation = evaluation

    def _maybe_send(self, trainer: Trainer, batch_idx: int, evaluation: bool) -> None:
        right_batch = trainer.current_epoch == self.epoch and batch_idx == self.batch
        if evaluation == self.evaluation and right_batch and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signal)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        self._maybe_send(trainer, batch_idx, evaluation=False)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._maybe_send(trainer, batch_idx, evaluation=True)

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._maybe_send(trainer, batch_idx, evaluation=True)

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._maybe_send(trainer, batch_idx, evaluation=True)


class HangInRun(Callback):
    """In the run whose folder is named ``run``, write the file ``marker`` at the start of training
    batch 1, then wait there for ever: a worker caught in the middle of a trial, for a test to kill
    at a moment it knows. Runs in other folders go through untouched."""

    def __init__(self, run: str, marker: str) -> None:
        self.run = run
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if batch_idx == 1 and Path(trainer.log_dir or "").name == self.run:
            self.marker.write_text(str(os.getpid()))
            while True:
                time.sleep(1)


class PoisonAt(Callback):
    """Set one weight to NaN at the start of training batch ``batch`` of epoch ``epoch``, so the
    loss of that very step is NaN (what a too-high learning rate does, without waiting for it)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def fingerprint(images: torch.Tensor) -> torch.Tensor:
    """One float64 per image (a fixed random projection): equal images, equal numbers."""
    projection = torch.randn(images[0].numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return images.flatten(1).double().cpu() @ projection


class Recorder(Callback):
    """Save, per process, a fingerprint of every training and test image it was given.

    Writes ``OUT/fit-rankR.pt`` after fit and ``OUT/test-rankR.pt`` after test: under DDP each
    process is its own program, and a file is how it reports back.
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: tuple, batch_idx: int) -> None:
        self.seen.append(fingerprint(batch[0]))

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: tuple, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.seen.append(fingerprint(batch[0]))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(f"fit-rank{trainer.global_rank}.pt", trainer.world_size)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(f"test-rank{trainer.global_rank}.pt", trainer.world_size)

    def _save(self, name: str, world_size: int) -> None:
        os.makedirs(self.out, exist_ok=True)
        torch.save({"seen": torch.cat(self.seen), "world_size": world_size}, os.path.join(self.out, name))
        self.seen = []


class NormRecordingSGD(torch.optim.SGD):
    """Plain SGD that records, at every step, the gradients it is about to apply: their total L2 norm
    and their largest absolute value (what gradient clipping must bound)."""

    def __init__(self, params, lr: float = 0.01) -> None:
        super().__init__(params, lr=lr)
        self.norms: list[float] = []
        self.max_abs: list[float] = []

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.max_abs.append(float(max(g.abs().max() for g in grads)))
        super().step()
        return loss


class EpochBatches(Callback):
    """Keeps a fingerprint of every training batch, per epoch, in ``self.epochs``."""

    def __init__(self) -> None:
        self.epochs: list[list[torch.Tensor]] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: tuple, batch_idx: int) -> None:
        self.epochs[-1].append(fingerprint(batch[0]))
