"""The study in its storage, and one worker's share of its trials.

Any number of workers (the same command, on one machine or many) share one study through its
storage. Each asks Optuna for a trial, which the storage hands out once; a trial whose worker dies
stops sending heartbeats, is marked failed by the next worker that looks, and is queued again with
the same values (Optuna's ``RetryHeartbeatStaleTrialCallback``). The study ends with ``n_trials`` finished
(complete or pruned) trials: a worker that is handed a trial beyond that number, because others took
the last ones at the same moment, marks it failed without training (``user_attrs["surplus"]``).

The sampler draws each trial's random numbers from the sweep's seed and the trial's number
(:class:`TrialSeededTPE`): trial numbers are unique in a study, so a resumed sweep or a second
worker never replays another trial's values, and a new study with the same seed repeats itself.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from fmnist_pl.errors import ConfigError, WriteError
from fmnist_pl.runs import claim_free_folder
from fmnist_pl.sweep.spec import SweepSpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


class TrialSeededTPE(BaseSampler):
    """Optuna's TPE sampler, seeded afresh for every trial from the sweep's seed and the trial's number.

    One ``TPESampler(seed=...)`` per process would start every process (a resumed sweep, each of N
    workers) from the same random state, so each would draw the values the first one drew. Trial
    numbers come from the storage and are never handed out twice, so seeding by them gives every
    trial its own draw, and the same study replayed from the same seed draws the same values.
    ``constant_liar``: while several workers run trials at once, TPE counts the running ones as
    poor results, so that concurrent trials do not cluster at one point.

    Args:
        seed: The sweep's seed.
        n_startup_trials: Random trials before TPE models the results.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._samplers: dict[int, TPESampler] = {}

    def for_trial(self, number: int) -> TPESampler:
        """The TPE sampler of trial ``number``, created at its first use."""
        if number not in self._samplers:
            seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
            self._samplers[number] = TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, constant_liar=True)
        return self._samplers[number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.for_trial(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.for_trial(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.for_trial(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial.number).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.for_trial(trial.number).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)


def sampler(spec: SweepSpec) -> TrialSeededTPE:
    """The sweep's sampler: random for its first quarter of trials (2 to 10), then TPE."""
    return TrialSeededTPE(spec.seed, n_startup_trials=min(10, max(2, spec.n_trials // 4)))


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


def open_study(spec: SweepSpec, storage: RDBStorage, study_name: str) -> tuple[optuna.Study, bool]:
    """Create the study, or join it when it exists (another worker, or a stopped sweep resumed);
    the second value says whether this worker created it (only one of workers started at once does)."""
    pruner: optuna.pruners.BasePruner = {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
        ),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }[spec.pruner]()
    try:
        try:
            study = optuna.create_study(
                storage=storage, study_name=study_name, direction=spec.direction, sampler=sampler(spec), pruner=pruner
            )
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(
                study_name=study_name, storage=storage, sampler=sampler(spec), pruner=pruner
            ), False
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise ConfigError(f"--storage {storage.url}: cannot use it ({str(err).splitlines()[0]})") from None


TRIALS_FOLDER = "trials_folder"


def claim_trials_folder(study: optuna.Study, created: bool, folder: Path, wait_seconds: float = 60.0) -> Path | None:
    """Make ``folder`` (``<save_dir>/sweeps/<study>``) this study's own before any of its trials starts.

    The worker that created the study moves aside whatever an earlier study of the same name left
    there (its storage deleted, or another storage), to ``<study>.earlier-N``, and returns where it
    went; then it records the folder in the study, and the other workers wait for that record, so
    none of them writes a trial into the earlier study's folder. A study created before this record
    existed keeps its folder as it is.
    """
    if created:
        moved = _move_aside(folder)
        study.set_user_attr(TRIALS_FOLDER, str(folder))
        return moved
    deadline = time.monotonic() + wait_seconds
    while TRIALS_FOLDER not in study.user_attrs and not study.get_trials(deepcopy=False):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return None


def _move_aside(folder: Path) -> Path | None:
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    # The first free NAME.earlier-N, claimed as an empty folder, which the rename then replaces.
    aside = folder.with_name(claim_free_folder(folder.parent, lambda number: f"{folder.name}.earlier-{number}", 1))
    try:
        folder.rename(aside)
    except OSError as err:
        raise WriteError(f"cannot move an earlier study's folder {folder} aside ({err.strerror})") from None
    return aside


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
