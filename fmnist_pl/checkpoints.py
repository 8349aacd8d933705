"""Reading checkpoints safely, with errors that name the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fmnist_pl.errors import CheckpointError


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code runs.

    Raises:
        CheckpointError: the file does not exist, is empty, truncated, not a checkpoint, or holds
            pickled objects other than tensors and plain containers.
    """
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {path}: no such file. Give the path of a .ckpt file from a run's checkpoints/ folder.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"--ckpt_path {path}: the file is empty, not a checkpoint.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"--ckpt_path {path}: refused, it holds objects that are not plain data ({first_line}); "
            "only load checkpoints you trust, and never with weights_only=False."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"--ckpt_path {path}: not a readable checkpoint (truncated or another kind of file: {type(err).__name__})."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict in it).")
    return checkpoint


def read_hyperparameters(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the data module's hyperparameters stored in a checkpoint."""
    checkpoint = load_checkpoint(path)
    return dict(checkpoint.get("hyper_parameters", {})), dict(checkpoint.get("datamodule_hyper_parameters", {}))
