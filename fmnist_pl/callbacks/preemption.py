"""On SIGTERM, save where training is, so a preempted fit can go on from that batch."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_pl.lightning_internals import batches_trained

RESUME_HINT = "to go on, run the same command with --ckpt_path last"


class CheckpointOnSigterm(Callback):
    """Saves ``last.ckpt`` mid-epoch when the fit is stopped by SIGTERM (what SLURM, Kubernetes and
    ``kill`` send), and notes on the exception where it went, for the command's last line.

    Lightning stops a fit on SIGTERM after the batch in progress and saves nothing. Here the state
    after that batch (weights, optimizer, loops, the random generators and the data module's place
    in the epoch) goes into ``last.ckpt``, so ``fit --ckpt_path last`` trains the rest of the epoch
    and ends with the weights an uninterrupted run ends with. A SIGTERM during validation or the
    sanity check saves nothing new: ``last.ckpt`` keeps the last completed epoch. SIGUSR1 (SLURM's
    requeue signal) is left to Lightning.
    """

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        completed = batches_trained(trainer)
        mid_epoch = 0 < completed < trainer.num_training_batches
        path = _last_checkpoint_path(trainer)
        if trainer.training and not trainer.sanity_checking and mid_epoch and path is not None:
            trainer.save_checkpoint(path, weights_only=False)
            exception.add_note(
                f"at epoch {trainer.current_epoch}, after batch {completed} of "
                f"{trainer.num_training_batches}; saved {path}; {RESUME_HINT}"
            )
        elif path is not None and path.is_file():
            where = f"at epoch {trainer.current_epoch}; {path} holds the last completed epoch"
            exception.add_note(f"{where}; {RESUME_HINT}")
        else:
            exception.add_note(f"at epoch {trainer.current_epoch}, before any checkpoint was saved")


def _last_checkpoint_path(trainer: Trainer) -> Path | None:
    """Where ``--ckpt_path last`` looks: the ``last`` ModelCheckpoint's file (cli.last_checkpoint)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.filename == "last" and callback.dirpath:
            return Path(callback.dirpath) / f"last{callback.FILE_EXTENSION}"
    return None
