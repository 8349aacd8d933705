"""A learning-rate schedule as long as the run: its length from the Trainer when the config leaves it out.

torch's OneCycleLR (``total_steps``) and CosineAnnealingLR (``T_max``) are sized in scheduler steps.
Written by hand, that number repeats the run's length (epochs times batches), and a run given other
``--trainer.max_epochs`` keeps the old schedule. Left out, it is the number of scheduler steps the
Trainer will take: ``trainer.estimated_stepping_batches`` when the scheduler steps every optimizer
step (``limit_train_batches``, accumulation and devices included), ``max_epochs`` when it steps every
epoch. A length given in the config is used as given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Trainer

from fmnist_pl.errors import ConfigError
from fmnist_pl.hparams import factory_target

# The schedulers whose length can be left out, and the argument that holds it.
LENGTH_ARGUMENTS: tuple[tuple[type, str], ...] = (
    (torch.optim.lr_scheduler.OneCycleLR, "total_steps"),
    (torch.optim.lr_scheduler.CosineAnnealingLR, "T_max"),
)


class CosineAnnealingLR(torch.optim.lr_scheduler.CosineAnnealingLR):
    """torch's ``CosineAnnealingLR`` whose ``T_max`` may be left out: the rate then falls to ``eta_min``
    at the end of the run, however long the run is (torch's own requires ``T_max``).

    Args:
        optimizer: The optimizer whose rate it sets.
        T_max: Scheduler steps from the start to ``eta_min``; None: the run's length.
        eta_min: The rate at the end.
        last_epoch: As torch's.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, T_max: int | None = None, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if T_max is None:
            raise ConfigError(
                "CosineAnnealingLR without T_max needs the run's length: give it to FashionClassifier as its "
                "scheduler (--model.scheduler), or give T_max"
            )
        super().__init__(optimizer, T_max, eta_min=eta_min, last_epoch=last_epoch)


def build_scheduler(
    factory: Any, optimizer: torch.optim.Optimizer, interval: str, trainer: Callable[[], Trainer]
) -> Any:
    """``factory(optimizer)``, with the run's length in the length argument when the factory leaves it out
    (``trainer`` gives the Trainer then: a module outside a fit has none)."""
    scheduler_class, given = factory_target(factory)
    argument = next((name for cls, name in LENGTH_ARGUMENTS if _is_subclass(scheduler_class, cls)), None)
    if argument is None or given.get(argument) is not None:
        return factory(optimizer)
    if argument == "total_steps" and given.get("epochs") is not None and given.get("steps_per_epoch") is not None:
        return factory(optimizer)  # OneCycleLR's other way to give its length
    return factory(optimizer, **{argument: run_length(trainer(), interval, argument)})


def run_length(trainer: Trainer, interval: str, argument: str) -> int:
    """The scheduler steps of the whole run: optimizer steps for ``interval="step"``, epochs otherwise."""
    if interval == "step":
        return int(trainer.estimated_stepping_batches)
    if trainer.max_epochs in (None, -1):
        raise ConfigError(
            f"--model.scheduler.init_args.{argument}: not given, and a run without --trainer.max_epochs has no "
            f"length in epochs; give {argument}, or --model.scheduler_interval step"
        )
    return int(trainer.max_epochs)


def _is_subclass(candidate: type | None, cls: type) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, cls)
