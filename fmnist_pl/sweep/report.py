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
    """The study's pictures (:func:`pictures`) as PNG files in ``folder``."""
    import matplotlib.pyplot as plt

    drawn = []
    for filename, axis in pictures(study).items():
        figure = axis.figure
        with atomic_path(folder / filename) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        plt.close(figure)
        drawn.append(folder / filename)
    return drawn


def pictures(study: optuna.Study) -> dict[str, Any]:
    """Optimization history, parallel coordinates and parameter importances: a matplotlib axes each,
    by file name.

    Optuna's matplotlib plots, labelled for a reader: the metric's name on the value axis, whole
    trial numbers, and each option by the short name :func:`short_names` gives it (Optuna would cut
    ``model.scheduler.init_args.max_lr`` to ``model.scheduler.i...``). Importances need two or more
    complete trials whose values differ; they are left out otherwise.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.ticker import MaxNLocator
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    metric = _metric(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    options = sorted({name for trial in complete for name in trial.params})
    labels = short_names(options)

    def history() -> Any:
        axis = plots.plot_optimization_history(study, target_name=metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        return axis

    def parallel() -> Any:
        axis = plots.plot_parallel_coordinate(study, target_name=metric)
        if len(axis.get_xticks()) == 1 + len(options):  # the metric, then the options in name order
            axis.set_xticks(axis.get_xticks(), [metric, *(labels[option] for option in options)])
        return axis

    def importances() -> Any:
        axis = plots.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target_name=metric)
        names = [labels.get(tick.get_text(), tick.get_text()) for tick in axis.get_yticklabels()]
        axis.set_yticks(axis.get_yticks(), names)
        return axis

    wanted = {"history.png": history, "parallel.png": parallel}
    if len(complete) >= 2 and len({trial.value for trial in complete}) > 1:
        wanted["importances.png"] = importances
    drawn = {}
    for filename, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axis = plot()
        axis.figure.set_size_inches(9, 5)
        axis.figure.tight_layout()
        drawn[filename] = axis
    return drawn


def short_names(options: list[str]) -> dict[str, str]:
    """Each option by its last part and what it belongs to, without the section and ``init_args``
    (``model.scheduler.init_args.max_lr`` -> ``scheduler.max_lr``, ``model.label_smoothing`` ->
    ``label_smoothing``), longer where two options would otherwise read alike."""
    parts = {option: [part for part in option.split(".") if part != "init_args"] for option in options}
    names = {}
    for option, own in parts.items():
        for length in range(min(2, len(own) - 1) or 1, len(own) + 1):
            tail = own[-length:]
            if all(other[-length:] != tail for name, other in parts.items() if name != option):
                break
        names[option] = ".".join(tail)
    return names


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
