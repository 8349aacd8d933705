"""One trial of a sweep: an ordinary ``fit`` run through the project's CLI, in this process.

Its run folder (``<save_dir>/sweeps/<study>/trial_NNNN``) has the curves, ``config.yaml`` and the
checkpoints of any run, the trial's number and sampled values in its hyperparameters (TensorBoard's
HPARAMS tab compares trials), and ``trial.yaml``: the number, the values, the state (complete,
pruned or failed), the metric and the seconds taken.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from optuna_integration import PyTorchLightningPruningCallback

from fmnist_pl.atomic import atomic_write_text
from fmnist_pl.errors import ConfigError
from fmnist_pl.sweep.optuna_internals import trial_of


class MetricNeverLogged(ConfigError):
    """The sweep's metric was not among a validation's logged metrics."""


class ReportToTrial(PyTorchLightningPruningCallback):
    """Optuna's pruning callback for Lightning, reporting every validation and never pruning at the
    validation after the last training batch (the trial is complete by then). The sweep has checked
    that the model logs the metric before any trial started."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.last_reported = float(trainer.callback_metrics[self.monitor])
        if _training_is_over(trainer):
            # Stopping now saves nothing, and a pruned trial's result would not count: report only.
            trial_of(self).report(self.last_reported, step=pl_module.current_epoch)
            return
        super().on_validation_end(trainer, pl_module)

    last_reported: float | None = None


def _training_is_over(trainer: Trainer) -> bool:
    """Whether this validation comes after the run's last training batch (max_epochs or max_steps)."""
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    return max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs and trainer.is_last_batch


class TrialHyperparameters(Callback):
    """Puts the trial's number and sampled values beside the run's own hyperparameters."""

    def __init__(self, study_name: str, number: int, values: dict[str, Any]) -> None:
        self.record = {"sweep/study": study_name, "sweep/trial": number, **{f"sweep/{k}": v for k, v in values.items()}}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(
                {key: str(value) if isinstance(value, list) else value for key, value in self.record.items()}
            )


def trial_options(values: dict[str, Any]) -> list[str]:
    """Sampled values as command-line options (lists and mappings in their YAML form)."""
    return [f"--{option}={_as_option(value)}" for option, value in values.items()]


def _as_option(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value).lower() if isinstance(value, bool) else str(value)


def trial_folder(number: int) -> str:
    """The name of trial ``number``'s run folder in its study's folder."""
    return f"trial_{number:04d}"


def run_trial(
    cli_class: type[LightningCLI],
    trial: optuna.Trial,
    study_name: str,
    base_argv: list[str],
    values: dict[str, Any],
    metric: str,
    runs: Path,
) -> float:
    """Fit one trial through ``cli_class`` (taking ``extra_callbacks``, as ``FashionCLI`` does) and return
    its metric at the last validation; raises ``optuna.TrialPruned`` when pruned."""
    version = trial_folder(trial.number)
    argv = [
        *base_argv,
        *trial_options(values),
        f"--trainer.logger.init_args.save_dir={runs.parent}",
        f"--trainer.logger.init_args.name={runs.name}",
        f"--trainer.logger.init_args.version={version}",
    ]
    trial.set_user_attr("run_folder", str(runs / version))
    started = time.monotonic()
    record: dict[str, Any] = {"number": trial.number, "study": study_name, "values": values, "metric": metric}
    reporter = ReportToTrial(trial, monitor=metric)
    try:
        cli = cli_class(  # type: ignore[call-arg]
            args=argv, extra_callbacks=[reporter, TrialHyperparameters(study_name, trial.number, values)]
        )
        value = cli.trainer.callback_metrics.get(metric)
        if value is None:
            raise MetricNeverLogged(
                f"metric {metric} was never logged: the trial ran no validation (check_val_every_n_epoch?)"
            )
        record.update(state="complete", value=float(value))
        return float(value)
    except optuna.TrialPruned as pruned:
        record.update(state="pruned", reason=str(pruned), last_reported=reporter.last_reported)
        raise
    except BaseException as err:
        record.update(state="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["seconds"] = round(time.monotonic() - started, 2)
        # Also for a trial that failed before its run began: its folder says why.
        atomic_write_text(runs / version / "trial.yaml", yaml.safe_dump(record, sort_keys=False))
