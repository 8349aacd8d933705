"""Finding earlier runs of a config: where they are logged, and the newest ``last.ckpt`` among them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmnist_pl.errors import CheckpointError

# TensorBoardLogger's and CSVLogger's default name, used when a logger is given without one.
_DEFAULT_NAME = "lightning_logs"


def runs_folder(trainer_config: Mapping[str, Any]) -> Path | None:
    """The folder holding one ``version_*`` folder per run of this config, or None without a logger.

    ``trainer_config`` is the parsed ``trainer`` section: with a logger given as ``class_path`` and
    ``init_args`` (``save_dir``, ``name``) that is ``save_dir/name``; with ``logger: true``,
    Lightning's own default, ``default_root_dir/lightning_logs``.
    """
    logger = trainer_config.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    if logger is None or logger is True:
        return Path(trainer_config.get("default_root_dir") or ".") / _DEFAULT_NAME
    if logger is False or not hasattr(logger, "get"):
        return None
    init_args = logger.get("init_args") or {}
    save_dir = init_args.get("save_dir") or trainer_config.get("default_root_dir") or "."
    name = init_args.get("name", _DEFAULT_NAME)
    return Path(save_dir) / name if name else Path(save_dir)


def newest_last_checkpoint(folder: Path | None) -> Path:
    """The most recently written ``*/checkpoints/last.ckpt`` under ``folder``.

    Raises:
        CheckpointError: there is no logger to look under, or no run there has a ``last.ckpt``.
    """
    if folder is None:
        raise CheckpointError(
            "--ckpt_path last: this config has no logger, so there are no earlier runs to look in; give a checkpoint's path."
        )
    candidates = [path for path in folder.glob("*/checkpoints/last.ckpt") if path.is_file()]
    if not candidates:
        raise CheckpointError(
            f"--ckpt_path last: no earlier run of this config has a last.ckpt (looked for {folder}/*/checkpoints/last.ckpt); "
            "train without --ckpt_path, or give a checkpoint's path."
        )
    return max(candidates, key=lambda path: path.stat().st_mtime_ns)
