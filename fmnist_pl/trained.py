"""A checkpoint's trained network, rebuilt from the checkpoint alone: what export writes, what serve
and a teacher score with. No LightningModule is built, so nothing of training is needed to use it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from torch import nn

from fmnist_pl.checkpoints import check_is_ours, load_checkpoint
from fmnist_pl.data.sets import normalization
from fmnist_pl.errors import CheckpointError
from fmnist_pl.model import MLP, FlipAveraged, Normalized


def trained_network(path: Path, option: str = "--ckpt_path") -> Normalized:
    """The checkpoint's network as evaluation runs it (flip averaging when it was trained with
    ``tta_flip``) with the data normalization it was trained with in front, in eval mode on the CPU:
    [0, 1] images ``(N, 1, 28, 28)`` in, scores out. The weights are the checkpoint's ``state_dict``
    (an ``EMAWeightAveraging`` average where the run had one). ``option`` names the file's origin in errors.
    """
    checkpoint = load_checkpoint(path, option)
    check_is_ours(path, checkpoint, option)
    model_hparams = checkpoint.get("hyper_parameters", {})
    spec = model_hparams.get("net")  # None: the classifier's default network
    network = build(spec) if spec is not None else MLP()
    weights = {key: value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
    try:
        # Under the name the classifier gives it, so errors name the checkpoint's own keys.
        nn.ModuleDict({"net": network}).load_state_dict(weights)
    except RuntimeError as err:  # weights of other shapes or names
        first = next(line.strip().rstrip(".") for line in str(err).splitlines()[1:] if line.strip())
        raise CheckpointError(
            f"{option} {path}: its weights do not fit the network its own hyperparameters describe ({first}); "
            "the file was changed after training: give another checkpoint"
        ) from None
    if model_hparams.get("tta_flip"):
        network = FlipAveraged(network)
    return Normalized(network, normalization(checkpoint.get("datamodule_hyper_parameters", {}))).eval()


def build(spec: Any) -> Any:
    """An object from its stored ``class_path`` and ``init_args`` (nested ones too), as LightningCLI saved it."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        arguments = {key: build(value) for key, value in (spec.get("init_args") or {}).items()}
        return getattr(importlib.import_module(module), name)(**arguments)
    return spec
