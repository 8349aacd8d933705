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


def timed_seed_fit(epochs: int, data_dir: str, log_dir: str, extra: list[str], progress_bar: str = "off") -> EpochTimer:
    """Fit configs/seed.yaml (plus ``extra`` options) for ``epochs`` epochs; return its timer.

    ``progress_bar``: ``default`` draws the bar a user's fit draws (on stdout), ``lightning`` draws
    Lightning's ``TQDMProgressBar`` as given (every batch), ``off`` none."""
    from pathlib import Path

    from fmnist_pl.cli import FashionCLI

    config = Path(__file__).resolve().parents[1] / "configs" / "seed.yaml"
    cli = FashionCLI(
        args=[
            "--config",
            str(config),
            f"--trainer.max_epochs={epochs}",
            f"--trainer.enable_progress_bar={str(progress_bar != 'off').lower()}",
            *(["--trainer.callbacks+=TQDMProgressBar"] if progress_bar == "lightning" else []),
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={log_dir}",
            f"--data.data_dir={data_dir}",
            *extra,
        ],
        run=False,
    )
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer
