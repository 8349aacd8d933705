"""Save torch's random generators in every checkpoint and put them back when a resumed run trains again."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RestoreRNGState(Callback):
    """Makes a resumed fit draw the same random numbers (dropout, mixup, and the torchvision path's
    flips under DDP) as an uninterrupted one.

    Lightning saves no random state. This callback's ``state_dict`` holds torch's CPU and CUDA
    generator states; they are put back when the first training batch starts rather than when
    the checkpoint is read: anything in between (the sanity check, other callbacks' ``on_fit_start``,
    making the loaders) may draw from them, and the first batch must see what it would have seen
    uninterrupted, whether the checkpoint ended an epoch or stopped in the middle of one. Every
    process of a DDP run holds the same state (seeded alike, drawing alike), so rank 0's stands
    for all.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        states: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._to_restore is None:
            return
        torch.set_rng_state(self._to_restore["torch"])
        cuda_states = self._to_restore.get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self._to_restore = None
