"""Stop a fit the moment its training loss is NaN or infinite, before any checkpoint can hold it."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from fmnist_pl.errors import NonFiniteLossError


class StopOnNonFiniteLoss(Callback):
    """Raise :class:`NonFiniteLossError` naming the epoch and optimizer step of the first NaN or infinite loss.

    Raising, rather than asking the trainer to stop, means no checkpoint is written after the
    failure: ``last.ckpt`` and ``best-*.ckpt`` keep the last good state. The check runs after every
    training batch, before Lightning's checkpoint callbacks (which it always calls last), and again
    before any checkpoint is written. Under DDP the processes decide together, so none is left
    waiting in a collective.

    On an accelerator, reading the loss back every step would stall the queue of kernels, so the
    losses are only marked there (no sync) and read every ``check_every_n_steps`` steps, at each
    validation and before each checkpoint; on the CPU the loss is already at hand and is read every step.

    Args:
        check_every_n_steps: Steps between two reads of the marks on an accelerator; at least 1.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._first_bad: tuple[int, float] | None = None  # (step, loss) of the first non-finite loss seen
        self._marks: torch.Tensor | None = None  # the same on an accelerator, as a tensor; step -1: none yet

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()
        step = trainer.global_step - 1  # the optimizer step this loss led to (zero-based)
        if loss.device.type == "cpu":
            value = loss.item()
            if self._first_bad is None and not math.isfinite(value):
                self._first_bad = (step, value)
            self._check(trainer)
            return
        if self._marks is None:
            self._marks = torch.tensor([-1.0, 0.0], device=loss.device)
        unmarked = (self._marks[0] < 0) & ~torch.isfinite(loss)
        self._marks = torch.where(unmarked, torch.stack([loss.new_tensor(step), loss]), self._marks)
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self._first_bad is None and self._marks is not None and self._marks[0].item() >= 0:
            step, loss = self._marks.tolist()
            self._first_bad = (int(step), loss)
        local_failure = self._first_bad is not None
        failed = local_failure
        if trainer.world_size > 1:
            failed = trainer.strategy.reduce_boolean_decision(local_failure, all=False)
        if not failed:
            return
        if not local_failure:
            raise NonFiniteLossError(
                f"another process's training loss is not finite at epoch {trainer.current_epoch}; training stopped."
            )
        step, loss = self._first_bad
        raise NonFiniteLossError(
            f"training loss is {loss} at epoch {trainer.current_epoch}, step {step}; training stopped "
            "and nothing after it was saved (last.ckpt and best-*.ckpt hold the last good state). "
            "Lower the learning rate, clip gradients (--trainer.gradient_clip_val) or check the data."
        )
