"""What describes a run, for ``hparams.yaml`` and TensorBoard's HPARAMS tab, and which stored keys are arguments."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch import LightningModule, Trainer

Scalar = int | float | str | bool


def public(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters a user set: without the keys starting with ``_`` (Lightning's bookkeeping)."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def factory_target(factory: Callable) -> tuple[Any, dict[str, Any]]:
    """What an optimizer or scheduler factory builds, and the arguments it was given.

    LightningCLI hands the model ``functools.partial`` objects that end in the class and carry its
    arguments as keywords; a plain function is its own target, with none.
    """
    if isinstance(factory, functools.partial):
        classes = [arg for arg in factory.args if isinstance(arg, type)]
        return (classes[-1] if classes else factory.func), dict(factory.keywords)
    return factory, {}


def describe_factory(name: str, factory: Callable | None) -> dict[str, Scalar]:
    """``{name: "torch.optim.AdamW", name/lr: 0.003, ...}`` for an optimizer or scheduler factory
    (a plain function by its qualified name)."""
    if factory is None:
        return {name: "none"}
    target, keywords = factory_target(factory)
    qualified = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(target).__name__)}"
    described: dict[str, Scalar] = {name: qualified.removeprefix(".")}
    described |= {f"{name}/{k}": _scalar(v) for k, v in keywords.items()}
    return described


def training_settings(trainer: Trainer, pl_module: LightningModule) -> dict[str, Scalar]:
    """What Lightning's own hyperparameter logging leaves out: the optimizer and scheduler with their
    arguments, ``max_epochs``, ``max_steps`` and the seed (-1: none set)."""
    settings = dict(pl_module.optimization_hparams())
    settings["trainer/max_epochs"] = trainer.max_epochs if trainer.max_epochs is not None else -1
    settings["trainer/max_steps"] = trainer.max_steps
    settings["seed_everything"] = int(os.environ.get("PL_GLOBAL_SEED", -1))
    return settings


def run_hyperparameters(trainer: Trainer, pl_module: LightningModule) -> dict[str, Scalar]:
    """The model's and the data's hyperparameters and the training settings: flat, with plain values,
    so runs can be compared by any of them (TensorBoard's HPARAMS tab)."""
    params: dict[str, Scalar] = {}
    for key, value in public(pl_module.hparams).items():
        params |= _flat(f"model/{key}", value)
    if trainer.datamodule is not None:
        params |= {f"data/{k}": _scalar(v) for k, v in public(trainer.datamodule.hparams).items()}
    return params | training_settings(trainer, pl_module)


def _flat(name: str, value: Any) -> dict[str, Scalar]:
    """A class given by ``class_path`` and ``init_args`` (the network) as ``name`` (its class) and
    ``name/arg`` (each argument); anything else as one plain value."""
    if isinstance(value, Mapping) and "class_path" in value:
        init_args = value.get("init_args") or {}
        return {name: str(value["class_path"])} | {f"{name}/{k}": _scalar(v) for k, v in init_args.items()}
    return {name: _scalar(value)}


def _scalar(value: Any) -> Scalar:
    return value if isinstance(value, (int, float, str, bool)) else str(value)
