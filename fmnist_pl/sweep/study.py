"""The study in its storage, and one worker's share of its trials.

Any number of workers (the same command, on one machine or many) share one study through its
storage. Each asks Optuna for a trial, which the storage hands out once; a trial whose worker dies
stops sending heartbeats, is marked failed by the next worker that looks, and is queued again with
the same values (Optuna's ``RetryHeartbeatStaleTrialCallback``). The study ends with ``n_trials`` finished
(complete or pruned) trials: a worker that is handed a trial beyond that number, because others took
the last ones at the same moment, marks it failed without training (``user_attrs["surplus"]``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from fmnist_pl.errors import ConfigError
from fmnist_pl.sweep.spec import SweepSpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


class Surplus(Exception):
    """This worker was handed a trial beyond the study's total; it is not trained."""


def default_storage(runs: Path, study_name: str) -> str:
    """An SQLite file beside the runs: nothing to start, enough for the workers of one machine."""
    return f"sqlite:///{runs / study_name}.db"


def open_storage(url: str, heartbeat_seconds: int) -> RDBStorage:
    """The study's storage, with heartbeats so that a dead worker's trial is found and retried."""
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--storage {url}: cannot create {folder} ({err.strerror})") from None
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    # Heartbeats and retries are marked experimental in Optuna; a shared study needs them.
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_seconds,
                        grace_period=2 * heartbeat_seconds + 1,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                    )
            except sqlalchemy.exc.OperationalError as err:
                # Workers started together on a new SQLite file race to create its tables.
                if "already exists" not in str(err) or attempt == 2:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {url}: cannot open it ({first})") from None


def open_study(spec: SweepSpec, storage: RDBStorage, study_name: str) -> optuna.Study:
    """Create the study, or join it when it exists (another worker, or a stopped sweep resumed)."""
    pruner: optuna.pruners.BasePruner = {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
        ),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }[spec.pruner]()
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.n_trials // 4)))
    try:
        return optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=spec.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise ConfigError(f"--storage {storage.url}: cannot use it ({str(err).splitlines()[0]})") from None


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def check_claim(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> None:
    """Raise ``Surplus`` when ``n_trials`` trials numbered before this one are finished or still claimed.

    Trial numbers come from the storage, so every worker ranks the same trial the same way.
    """
    before = [t for t in study.get_trials(deepcopy=False, states=_CLAIMED) if t.number < trial.number]
    if len(before) >= n_trials:
        raise Surplus


def threads_per_worker(study: optuna.Study) -> int:
    """This machine's cores split between the workers running trials on it now (this one included),
    never more than ``$OMP_NUM_THREADS`` when the user has set it."""
    host = socket.gethostname()
    here = {
        t.user_attrs.get("worker")
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == host
    }
    here.add(os.getpid())
    share = max(1, (os.cpu_count() or 1) // len(here))
    asked = os.environ.get("OMP_NUM_THREADS", "").split(",")[0]
    return min(share, int(asked)) if asked.isdigit() and int(asked) > 0 else share


def work(
    study: optuna.Study,
    n_trials: int,
    objective: Callable[[optuna.Trial], float],
    timeout: float | None,
    poll_seconds: float,
) -> None:
    """Run trials until the study has ``n_trials`` finished ones, or ``timeout`` seconds have passed.

    While the last trials are being run by other workers, wait: one of them may die, and its trial
    then comes back to be retried.
    """
    started = time.monotonic()
    while finished(study) < n_trials:
        if timeout is not None and time.monotonic() - started >= timeout:
            print(f"sweep: --timeout {timeout:g} s reached; run the same command again to go on", file=sys.stderr)
            return
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished(study) + running >= n_trials:
            time.sleep(poll_seconds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)
            continue
        study.optimize(objective, n_trials=1, catch=(Surplus,), gc_after_trial=False)


def tag_worker(trial: optuna.Trial) -> None:
    """Record which machine and process runs ``trial`` (for splitting cores, and for the summary)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("worker", os.getpid())
