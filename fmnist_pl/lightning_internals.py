"""The private names of Lightning that this project relies on, all in one place: attributes, and the
layout of the checkpoint's loops and callback states.

Each one does something no public mechanism of Lightning 2.6 does. A private name can be renamed or
dropped in any release, and then an override of it silently stops working: :func:`missing` lists
those gone from the installed Lightning, and the test suite fails with that list and the version.
"""

from __future__ import annotations

import inspect
import tempfile
from typing import Any

import lightning
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger


class KeepCommandLineOverCheckpoint:
    """Mixin for a LightningCLI: Lightning's own merge of a checkpoint's hyperparameters is switched off.

    ``LightningCLI._parse_ckpt_path`` parses the checkpoint's hyperparameters over the parsed config,
    so they silently override options given on the command line (``--model.tta_flip false`` comes
    back ``true``). The subclass does the merge itself, below the command line (``FashionCLI.parse_arguments``).
    """

    def _parse_ckpt_path(self) -> None:
        return


def subcommand_parser(cli: LightningCLI, subcommand: str) -> LightningArgumentParser:
    """The parser of one subcommand (``fit``, ``test``...), to set defaults in it."""
    return cli._parser(subcommand)


def version_unset(logger: Logger) -> bool:
    """Whether a TensorBoardLogger or CSVLogger will pick its own ``version_N`` (no version was given)."""
    return isinstance(logger, (TensorBoardLogger, CSVLogger)) and logger._version is None


def set_version(logger: TensorBoardLogger | CSVLogger, version: str) -> None:
    """Give a logger its version before it writes anything (the public ``version`` is read-only)."""
    logger._version = version


def restore_training_loader_state(trainer: Trainer) -> None:
    """Hand the training loader the state a resumed checkpoint holds for it, if Lightning has not.

    Reading ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` makes the fit loop build
    the training loader before the checkpoint is restored, and Lightning 2.6 then never gives that
    loader its saved state (Lightning-AI/pytorch-lightning#20550): a fit resumed mid-epoch would
    start the epoch again. Called when training starts: after the restore, before the first batch.
    """
    trainer.fit_loop._load_combined_loader_states()


def epochs_trained(checkpoint: dict[str, Any]) -> int:
    """How many epochs the fit that wrote ``checkpoint`` had finished (its fit loop's progress)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(progress.get("current", {}).get("processed", 0))


def batches_trained(trainer: Trainer) -> int:
    """Training batches completed in the current epoch (the fit loop's progress)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def model_checkpoint_states(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The saved states of the run's ``ModelCheckpoint`` callbacks (``dirpath``, ``monitor``,
    ``best_model_path``, ``current_score``...), which Lightning keys by a string of the class name
    and its settings."""
    states = checkpoint.get("callbacks", {})
    return [
        state for key, state in states.items() if str(key).startswith("ModelCheckpoint") and isinstance(state, dict)
    ]


def missing() -> list[str]:
    """The private names above that the installed Lightning no longer has or no longer uses, with its version."""
    gone = []
    cli_source = inspect.getsource(LightningCLI)
    if "self._parse_ckpt_path()" not in cli_source:
        gone.append("LightningCLI._parse_ckpt_path (no longer called: KeepCommandLineOverCheckpoint does nothing)")
    if not callable(getattr(LightningCLI, "_parser", None)):
        gone.append("LightningCLI._parser (subcommand_parser)")
    with tempfile.TemporaryDirectory() as folder:
        for logger_class in (TensorBoardLogger, CSVLogger):
            logger = logger_class(folder)
            if not version_unset(logger) or (set_version(logger, "version_7"), logger.version)[1] != "version_7":
                gone.append(f"{logger_class.__name__}._version (set_version, version_unset)")
    from lightning.pytorch.loops.fit_loop import _FitLoop

    if not callable(getattr(_FitLoop, "_load_combined_loader_states", None)):
        gone.append("_FitLoop._load_combined_loader_states (restore_training_loader_state)")
    return [f"lightning {lightning.__version__}: {name}" for name in gone]
