"""Reading and writing checkpoints safely: weights_only loading, one-line errors, atomic saves."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from fmnist_pl.atomic import atomic_path
from fmnist_pl.errors import CheckpointError


def load_checkpoint(path: Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code runs.

    Args:
        path: The checkpoint file.
        option: How the error messages name the file's origin (an option, or a function argument).

    Raises:
        CheckpointError: the file does not exist, is empty, truncated, not a checkpoint, or holds
            pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{option} {path}: no such file. Give the path of a .ckpt file from a run's checkpoints/ folder."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{option} {path}: the file is empty, not a checkpoint.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported (?:global|class)[^\n]*?(?:GLOBAL )?([\w.]+)", str(err))
        if refused is None:  # not a pickle at all (e.g. a text file): nothing was refused
            raise CheckpointError(f"{option} {path}: not a readable checkpoint (another kind of file).") from None
        raise CheckpointError(
            f"{option} {path}: refused, it holds objects that are not plain data (a pickled {refused.group(1)}, "
            "which would run code when loaded); only load checkpoints you trust, and never with weights_only=False."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{option} {path}: not a readable checkpoint (truncated or another kind of file: {type(err).__name__})."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{option} {path}: not a Lightning checkpoint (no state_dict in it).")
    return checkpoint


def check_is_ours(path: Path, checkpoint: dict[str, Any], option: str = "--ckpt_path") -> None:
    """Raise ``CheckpointError`` unless the checkpoint holds this project's classifier in its current
    format: ``net.*`` weights, and the network stored as ``net`` (its class_path and init_args)."""
    keys = list(checkpoint["state_dict"])
    if not any(key.startswith("net.") for key in keys):
        held = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "") if keys else "no weights"
        raise CheckpointError(f"{option} {path}: not a checkpoint of this project's model (it holds {held}).")
    stored = checkpoint.get("hyper_parameters", {})
    if "net" not in stored and ("network" in stored or "hidden_sizes" in stored):
        raise CheckpointError(
            f"{option} {path}: this checkpoint predates the network option --model.net (it stores "
            "network/hidden_sizes instead); train it again with this version of fmnist_pl."
        )


def check_fits(path: Path, checkpoint: dict[str, Any], model: nn.Module, option: str = "--ckpt_path") -> None:
    """Raise ``CheckpointError`` naming the first weight where the checkpoint's network and ``model``'s
    differ (a missing one, or another shape), before any weight is loaded."""
    stored = {key: tuple(value.shape) for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
    built = {key: tuple(value.shape) for key, value in model.state_dict().items() if key.startswith("net.")}
    if stored == built:
        return
    stored_class = (checkpoint.get("hyper_parameters", {}).get("net") or {}).get("class_path")
    built_class = f"{type(model.net).__module__}.{type(model.net).__qualname__}"
    if stored_class and stored_class != built_class:
        difference = f"the checkpoint holds a {stored_class}; the config builds a {built_class}"
    else:
        key = next(k for k in sorted(stored.keys() | built.keys()) if stored.get(k) != built.get(k))
        difference = (
            f"{key} is {_shape(stored.get(key))} in the checkpoint and {_shape(built.get(key))} in the config's network"
        )
    raise CheckpointError(
        f"{option} {path}: {difference}. Give the checkpoint's own settings (or no --config), or another checkpoint."
    )


def _shape(shape: tuple[int, ...] | None) -> str:
    return "missing" if shape is None else str(list(shape))


class SafeLoading:
    """Mixin for a LightningModule: ``load_from_checkpoint`` always with ``weights_only=True``.

    A file path is read first by :func:`load_checkpoint`, so a missing, truncated or code-carrying
    file is a one-line ``CheckpointError`` naming it.
    """

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Any:
        if weights_only is False:
            raise CheckpointError(
                f"{checkpoint_path}: weights_only=False refused; this project loads checkpoints as plain data only."
            )
        if isinstance(checkpoint_path, (str, Path)):
            load_checkpoint(Path(checkpoint_path), option="checkpoint_path")
        return super().load_from_checkpoint(  # type: ignore[misc]
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=True,
            **kwargs,
        )


class SafeCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint reads and writes (fit's resume, test, validate, predict, every save).

    Reads always use ``weights_only=True`` through :func:`load_checkpoint`, whatever the caller
    asks for, so a checkpoint carrying pickled code is refused before any of it runs, and a bad
    file is a one-line error naming it. Writes go to a temporary file in the same folder, are
    fsynced, then renamed over the old file: a kill or a full disk while saving leaves the previous
    checkpoint whole (Lightning's own writer opens the final name and writes into it).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(
                f"--weights_only false: refused for {path}; this project loads checkpoints as plain data only."
            )
        return load_checkpoint(Path(path))
