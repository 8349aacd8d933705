"""``python -m fmnist_pl sweep``: a hyperparameter search over the CLI's options, with Optuna.

Every trial is an ordinary ``fit`` of the sweep's base config with its sampled options; the trials,
the study's storage, the summary, the best config and the pictures live under
``<save_dir>/sweeps/<study>/``. Run the same command again to resume a stopped sweep, or on several
machines (``--storage postgresql+psycopg://...``) to share it between workers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmnist_pl.errors import ConfigError, UserError, one_line

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

    from fmnist_pl.sweep.spec import SweepSpec

EPILOG = """Options after the sweep's own go to every trial, e.g. `--trainer.max_epochs 2`.
Live view of the same storage: `optuna-dashboard sqlite:///lightning_logs/sweeps/NAME.db`."""


def parser() -> argparse.ArgumentParser:
    sweep = argparse.ArgumentParser(
        prog="python -m fmnist_pl sweep",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog=EPILOG,
        allow_abbrev=False,
    )
    sweep.add_argument("--config", required=True, type=Path, help="the sweep file (configs/sweeps/*.yaml)")
    sweep.add_argument("--n_trials", type=int, help="finished trials the study ends with (default: the sweep file's)")
    sweep.add_argument("--storage", help="an SQLAlchemy URL (default: sqlite:///<save_dir>/sweeps/<study>.db)")
    sweep.add_argument("--study_name", help="default: the sweep file's name")
    sweep.add_argument("--timeout", type=float, help="seconds after which this worker starts no new trial")
    sweep.add_argument("--save_dir", type=Path, default=Path("lightning_logs"), help="where the runs go")
    sweep.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between a worker's heartbeats; a trial silent for "
        "twice as long (plus one second) is taken for dead and retried",
    )
    return sweep


def main(argv: list[str], cli: type[LightningCLI]) -> None:
    """Run the sweep; every trial is ``cli(args=["fit", ...])``, the project's ``FashionCLI``."""
    from fmnist_pl.sweep.spec import load_spec

    sweep = parser()
    args, trial_args = sweep.parse_known_args(argv)
    if stray := [arg for arg in trial_args if arg.startswith("-") and not arg.startswith("--")]:
        raise ConfigError(f"sweep: unknown option {stray[0]}; trial options are written --name value")
    spec = load_spec(args.config)
    n_trials = spec.n_trials if args.n_trials is None else args.n_trials
    if n_trials < 1:
        raise ConfigError(f"--n_trials must be at least 1, got {n_trials}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
    study_name = args.study_name or spec.name
    base_argv = ["fit", "--config", str(spec.base_config), *trial_args]
    with _command_line_parsed():
        own_values = check_options(cli, spec, base_argv, args.config, trial_args)
        run(cli, spec, study_name, base_argv, n_trials, args, own_values)


@contextmanager
def _command_line_parsed() -> Iterator[None]:
    """While the sweep runs its trials, ``sys.argv`` holds the program's name alone.

    The sweep's own command line is parsed by then, and each trial's CLI is given its arguments from
    Python; Lightning warns when a CLI's ``args`` and a ``sys.argv`` of other arguments meet.
    """
    saved = sys.argv[:]
    del sys.argv[1:]
    try:
        yield
    finally:
        sys.argv[:] = saved


def check_options(
    cli: type[LightningCLI], spec: SweepSpec, base_argv: list[str], path: Path, trial_args: Sequence[str] = ()
) -> dict[str, Any]:
    """Check, building nothing, that every trial can run and log the sweep's metric; return the base
    config's own values of the space's options (as Optuna stores them), or nothing when one of them
    lies outside the space.

    The base config is parsed with the trial options of the command line, then with every option of
    the space (at a value it can take). A mistake is one ``ConfigError`` naming where it is: the
    command line's trial options, the base config, or the sweep file's space.
    """
    from fmnist_pl.sweep.trial import trial_options

    try:
        config = _parse(cli, base_argv)
    except (ConfigError, SystemExit) as err:
        if trial_args and _parses(cli, base_argv[:3]):
            reason = str(err) if isinstance(err, ConfigError) else "they do not parse (above)"
            raise ConfigError(f"sweep: a trial option on the command line: {reason}") from None
        reason = str(err) if isinstance(err, ConfigError) else "it does not parse (above)"
        raise ConfigError(f"{path}: base_config {spec.base_config}: {reason}") from None
    examples = {parameter.option: parameter.example() for parameter in spec.space}
    try:
        _parse(cli, [*base_argv, *trial_options(examples)])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except SystemExit:
        raise ConfigError(f"{path}: the base config with the space's options does not parse (above)") from None
    check_metric_is_logged(spec, config, path)
    own: dict[str, Any] = {}
    stored: dict[str, Any] = {}
    for parameter in spec.space:
        if all(own.get(option) == wanted for option, wanted in parameter.when.items()):
            value = config.get(parameter.option)
            if not parameter.contains(value):
                return {}
            own[parameter.option] = value
            stored[parameter.option] = parameter.stored(value)
    return stored


def check_metric_is_logged(spec: SweepSpec, config: Any, path: Path) -> None:
    """Raise ``ConfigError`` when no trial could report ``spec.metric``: a name the model never logs,
    or Trainer options (the base config's, the command line's, or an end of the space's range) under
    which a fit runs no validation."""
    from fmnist_pl.module import FashionClassifier

    logged = FashionClassifier.logged_metrics()
    if spec.metric not in logged:
        validation = ", ".join(name for name in logged if name.startswith("val/"))
        raise ConfigError(f"{path}: metric {spec.metric} is never logged; a validation logs {validation}")
    trainer = {key: config.get(f"trainer.{key}") for key in _VALIDATION_OPTIONS}
    if (why := no_validation(trainer)) is not None:
        raise ConfigError(f"sweep: no trial would log {spec.metric}: {why}")
    for parameter in spec.space:
        key = parameter.option.removeprefix("trainer.")
        if key not in _VALIDATION_OPTIONS:
            continue
        for value in parameter.extremes():
            if (why := no_validation({**trainer, key: value})) is not None:
                raise ConfigError(f"{path}: space.{parameter.option} can take {value}, and then {why}")


_VALIDATION_OPTIONS = ("max_epochs", "max_steps", "check_val_every_n_epoch", "limit_val_batches")


def no_validation(trainer: dict[str, Any]) -> str | None:
    """Why a fit with these Trainer options validates never, naming the options; None when it validates."""
    limit = trainer.get("limit_val_batches")
    if limit is not None and limit == 0:
        return f"--trainer.limit_val_batches {limit} turns validation off"
    every, max_epochs = trainer.get("check_val_every_n_epoch"), trainer.get("max_epochs")
    by_epochs = trainer.get("max_steps") in (None, -1) and max_epochs not in (None, -1)
    if every is not None and by_epochs and every > max_epochs:
        return (
            f"--trainer.check_val_every_n_epoch {every} is more than --trainer.max_epochs {max_epochs}, so no "
            f"fit validates; give --trainer.check_val_every_n_epoch {max_epochs} as well"
        )
    return None


def _parses(cli: type[LightningCLI], argv: list[str]) -> bool:
    try:
        _parse(cli, argv)
    except (ConfigError, SystemExit):
        return False
    return True


def _parse(cli: type[LightningCLI], argv: list[str]) -> Any:
    """The parsed ``fit`` config of ``argv``, through ``cli`` stopped before it builds anything."""
    parsed: list[Any] = []

    class ParseOnly(cli):  # type: ignore[misc, valid-type]
        def parse_arguments(self, parser: Any, args: Any) -> None:
            # Stopped right after parsing: before the seed is set (and logged), before anything is built.
            super().parse_arguments(parser, args)
            parsed.append(self.config[self.config["subcommand"]])
            raise _Parsed

    try:
        ParseOnly(args=argv)
    except _Parsed:
        return parsed[0]
    raise AssertionError("the CLI ran past parsing")


class _Parsed(Exception):
    pass


class TrialFailed(UserError):
    """A trial raised an error; the sweep stops with it in one line (``FMNIST_DEBUG=1``: the traceback)."""


def run(
    cli: type[LightningCLI],
    spec: SweepSpec,
    study_name: str,
    base_argv: list[str],
    n_trials: int,
    args: argparse.Namespace,
    own_values: dict[str, Any],
) -> None:
    """Open or join the study and work on it; a new study's first trial is the base config itself
    (when its values lie in the space), so the summary shows every candidate beside it."""
    import optuna
    import torch

    from fmnist_pl.sweep import report
    from fmnist_pl.sweep import study as studies
    from fmnist_pl.sweep.trial import MetricNeverLogged, run_trial, trial_folder

    runs = args.save_dir / "sweeps" / study_name
    storage = studies.open_storage(args.storage or studies.default_storage(runs.parent, study_name), args.heartbeat)
    study, created = studies.open_study(spec, storage, study_name)
    if (moved := studies.claim_trials_folder(study, created, runs)) is not None:
        print(f"sweep {study_name}: a new study; the earlier one's trials moved aside to {moved}", file=sys.stderr)
    if created and own_values:
        study.enqueue_trial(own_values, user_attrs={"base_config": True})
    study.set_user_attr("metric", spec.metric)
    # Optuna logs a failed trial with its traceback; the sweep says it in one line (TrialFailed).
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(trial: optuna.Trial) -> float:
        studies.tag_worker(trial)
        try:
            studies.check_claim(study, trial, n_trials)
        except studies.Surplus:
            trial.set_user_attr("surplus", True)
            raise
        torch.set_num_threads(studies.threads_per_worker(study))
        try:
            return run_trial(cli, trial, study_name, base_argv, spec.sample(trial), spec.metric, runs)
        except (optuna.TrialPruned, MetricNeverLogged):
            raise
        except Exception as err:
            cause = one_line(err) or f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
            raise TrialFailed(
                f"sweep {study_name}: trial {trial.number} failed: {cause} "
                f"(recorded in {runs / trial_folder(trial.number) / 'trial.yaml'})"
            ) from err

    done_before = studies.finished(study)
    print(f"sweep {study_name}: {done_before} of {n_trials} trials finished; storage {storage.url}", file=sys.stderr)
    try:
        studies.work(study, n_trials, objective, args.timeout, poll_seconds=min(5.0, args.heartbeat))
    except MetricNeverLogged:
        if created and len(study.get_trials(deepcopy=False)) <= 1:
            optuna.delete_study(study_name=study_name, storage=storage)
        raise
    report.check_some_trial_completed(study)
    print(report.write_summary(study, runs), file=sys.stderr)
    for picture in report.draw_pictures(study, runs):
        print(f"picture: {picture}", file=sys.stderr)
    best = report.write_best_config(study, runs, f"{study_name}-best")
    print(
        f"best trial {study.best_trial.number}: {spec.metric} {study.best_value:.4f}; "
        f"fit it again: python -m fmnist_pl fit --config {best}",
        file=sys.stderr,
    )
