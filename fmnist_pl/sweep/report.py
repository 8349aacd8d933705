"""A sweep's results: the summary table, the best trial as a config, and the pictures.

All beside the trials' run folders, in ``<save_dir>/sweeps/<study>/``: ``summary.csv``,
``best.yaml``, and ``history.png``, ``importances.png``, ``parallel.png`` (Optuna's matplotlib plots).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from fmnist_pl.atomic import atomic_path, atomic_write_text
from fmnist_pl.errors import ConfigError


def summary_rows(study: optuna.Study) -> tuple[list[str], list[list[Any]]]:
    """One row a trial: number, state, metric, seconds, a note (the base config, a retry), every sampled option."""
    trials = study.get_trials(deepcopy=False)
    options = sorted({name for trial in trials for name in trial.params})
    header = ["trial", "state", "value", "seconds", "note", *options]
    rows = []
    for trial in trials:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        state = "surplus" if trial.user_attrs.get("surplus") else trial.state.name.lower()
        rows.append(
            [
                trial.number,
                state,
                _number(trial.value if trial.state == TrialState.COMPLETE else _last(trial)),
                _number(seconds, 1),
                _note(trial),
                *(trial.params.get(name, "") for name in options),
            ]
        )
    return header, rows


def write_summary(study: optuna.Study, folder: Path) -> str:
    """Save ``summary.csv`` and return the table as aligned text for the terminal."""
    header, rows = summary_rows(study)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    atomic_write_text(folder / "summary.csv", buffer.getvalue())
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(str(row[column])) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def write_best_config(study: optuna.Study, folder: Path, name: str) -> Path:
    """The best complete trial's own ``config.yaml`` as a config for ``fit --config``, its runs named ``name``.

    The trial's full config (LightningCLI saved every value the run used), with the logger's fixed
    trial version removed, so that fitting it again makes a fresh run folder.
    """
    best = study.best_trial
    run_config = Path(best.user_attrs["run_folder"]) / "config.yaml"
    config = yaml.safe_load(run_config.read_text(encoding="utf-8"))
    config.pop("ckpt_path", None)
    logger = config.get("trainer", {}).get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].pop("version", None)
        logger["init_args"]["name"] = name
        logger["init_args"]["save_dir"] = "lightning_logs"
    header = (
        f"# The best trial ({best.number}) of the sweep {study.study_name}: {_metric(study)} = {best.value:.4f}.\n"
        f"# Its sampled values: {', '.join(f'{k}={v}' for k, v in best.params.items())}.\n"
    )
    path = folder / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def draw_pictures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history, parameter importances and parallel coordinates, as PNG files.

    Importances need two or more complete trials whose values differ; they are skipped otherwise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawn = []
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    wanted = {"history.png": plots.plot_optimization_history, "parallel.png": plots.plot_parallel_coordinate}
    if len(complete) >= 2 and len({trial.value for trial in complete}) > 1:
        wanted["importances.png"] = _importances
    for filename, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        with atomic_path(folder / filename) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        plt.close(figure)
        drawn.append(folder / filename)
    return drawn


def _importances(study: optuna.Study) -> Any:
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    return plots.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())


def check_some_trial_completed(study: optuna.Study) -> None:
    """After a sweep in which no trial completed, one line pointing at the trials' records rather than
    Optuna's "no best trial"."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"sweep {study.study_name}: no trial completed; see the trials' trial.yaml for why")


def _metric(study: optuna.Study) -> str:
    return study.user_attrs.get("metric", "value")


def _note(trial: FrozenTrial) -> str:
    if trial.user_attrs.get("base_config"):
        return "the base config"
    if (retried := trial.system_attrs.get("failed_trial")) is not None:
        return f"retry of {retried}"
    return ""


def _last(trial: FrozenTrial) -> float | None:
    values = trial.intermediate_values
    return values[max(values)] if values else None


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
