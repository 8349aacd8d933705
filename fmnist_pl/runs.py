"""Finding earlier runs of a config: where they are logged, and their newest ``last`` and ``best`` checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fmnist_pl.atomic import describe
from fmnist_pl.checkpoints import load_checkpoint
from fmnist_pl.errors import CheckpointError, WriteError
from fmnist_pl.lightning_internals import model_checkpoint_states

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


def newest_checkpoint(
    folder: Path | None,
    alias: str,
    runs: str = "*",
    whose: str = "of this config",
    first: str = "train without --ckpt_path",
) -> Path:
    """``--ckpt_path last``: the most recently written ``<runs>/checkpoints/last.ckpt`` under ``folder``;
    ``--ckpt_path best``: the ``best-*.ckpt`` of the run that wrote the newest checkpoint.

    ``runs`` is the pattern of the run folders under ``folder`` (``*``: one config's ``version_*``;
    ``*/*``: every config's, from ``lightning_logs``); ``whose`` names those runs in the error, and
    ``first`` what to do when there is none.

    A run keeps one ``best-*.ckpt`` (``save_top_k=1``); with more, the one its ``ModelCheckpoint``
    recorded as best in its newest checkpoint wins.

    Raises:
        CheckpointError: there is no logger to look under, or no earlier run has such a checkpoint.
    """
    if folder is None:
        raise CheckpointError(
            f"--ckpt_path {alias}: this config has no logger, so there are no earlier runs to look in; "
            "give a checkpoint's path."
        )
    pattern = "last.ckpt" if alias == "last" else "best-*.ckpt"
    candidates = [path for path in folder.glob(f"{runs}/checkpoints/{pattern}") if path.is_file()]
    if not candidates:
        raise CheckpointError(
            f"--ckpt_path {alias}: no earlier run {whose} has a {pattern} (looked for "
            f"{folder}/{runs}/checkpoints/{pattern}); {first}, or give a checkpoint's path."
        )
    if alias == "last":
        return max(candidates, key=_written_at)
    newest_run = max((path.parent for path in candidates), key=lambda run: max(map(_written_at, run.glob("*.ckpt"))))
    in_run = sorted(path for path in candidates if path.parent == newest_run)
    if len(in_run) > 1:
        recorded = _recorded_best(max(newest_run.glob("*.ckpt"), key=_written_at))
        in_run = [path for path in in_run if path.name == recorded] or in_run
    return in_run[0]


def claim_run_folder(folder: Path) -> str:
    """Create the next free ``version_N`` under ``folder`` and return its name.

    Fits started at the same moment each get a folder of their own (Lightning's loggers pick N by
    listing the folder, and two fits can pick the same N).
    """
    taken = [int(p.name.removeprefix("version_")) for p in folder.glob("version_*") if p.name[8:].isdigit()]
    return claim_free_folder(folder, lambda number: f"version_{number}", max(taken, default=-1) + 1)


def claim_evaluation_folder(run_dir: Path, name: str) -> str:
    """Create ``run_dir/name`` (``test-last``), or ``name-2``, ``name-3``... when taken; return its name."""
    return claim_free_folder(run_dir, lambda number: name if number == 1 else f"{name}-{number}", 1)


def claim_free_folder(parent: Path, name_of: Callable[[int], str], first: int) -> str:
    """Create ``parent/name_of(n)`` for the first ``n`` from ``first`` on that is free; return its name.

    ``os.mkdir`` either creates the folder or fails because it exists, atomically, also on a file
    system shared by several machines: two processes never claim the same folder.
    """
    number = first
    while True:
        candidate = parent / name_of(number)
        try:
            candidate.mkdir(parents=True)
            return candidate.name
        except FileExistsError:
            number += 1
        except OSError as err:
            raise WriteError(
                f"cannot write {candidate}: {describe(err)}; give a folder that can be written "
                "(--trainer.logger.init_args.save_dir)."
            ) from None


def teacher_checkpoint(spec: str, option: str = "--model.teacher") -> Path:
    """A checkpoint file as given, or for a run name's folder (``lightning_logs/teacher``) its newest run's
    best checkpoint."""
    path = Path(spec)
    if not path.is_dir():
        return path
    try:
        return newest_checkpoint(path, "best")
    except CheckpointError:
        raise CheckpointError(
            f"{option} {spec}: no run in this folder has a best-*.ckpt; train the teacher first "
            "(python -m fmnist_pl fit --config configs/teacher.yaml) or give a checkpoint's path."
        ) from None


def run_folder_of(ckpt_path: Path, checkpoint: dict[str, Any]) -> Path | None:
    """The run folder of a checkpoint kept in a run's ``checkpoints/`` (beside its ``config.yaml``), or None.

    Spelled as the run's checkpoint callbacks recorded their folder when that names the same place
    (a relative path stays relative): on resume, Lightning keeps a ``ModelCheckpoint``'s state (its
    best checkpoints, which it deletes when outdone) only if the folder is spelled as before.
    """
    folder = ckpt_path.resolve().parent
    if folder.name != "checkpoints" or not (folder.parent / "config.yaml").is_file():
        return None
    for state in model_checkpoint_states(checkpoint):
        recorded = state.get("dirpath")
        if recorded and Path(recorded).is_dir() and Path(recorded).resolve() == folder:
            return Path(recorded).parent
    return folder.parent


def _written_at(path: Path) -> int:
    return path.stat().st_mtime_ns


def _recorded_best(checkpoint_path: Path) -> str | None:
    """The file name a checkpoint's ``ModelCheckpoint`` state calls best, if it holds one."""
    for state in model_checkpoint_states(load_checkpoint(checkpoint_path)):
        if state.get("monitor") and state.get("best_model_path"):
            return Path(state["best_model_path"]).name
    return None
