"""``python -m fmnist_pl sweep``: real Optuna studies on SQLite and on a real PostgreSQL server, real
trials through the CLI on the real FashionMNIST files, workers killed and run side by side."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from fmnist_pl.cli import FashionCLI
from fmnist_pl.sweep import report
from fmnist_pl.sweep.command import check_options
from fmnist_pl.sweep.spec import load_spec
from fmnist_pl.sweep.study import threads_per_worker

from .helpers import QUIET, REPO, exit_of_main, run_main, scalars

SPACE = {
    "model.scheduler.init_args.max_lr": {"low": 0.002, "high": 0.02, "log": True},
    "model.net.init_args.hidden_sizes": {"choices": [[256, 128], [32, 16]]},
}


def trial_options(data_dir: Path, batches: int = 10, epochs: int = 1) -> list[str]:
    """Options for every trial: fast.yaml shrunk to ``epochs`` of ``batches`` batches, validated each epoch
    (without its ValidateOnceAtTheEnd, its only callback)."""
    return [
        *QUIET,
        f"--trainer.max_epochs={epochs}",
        "--trainer.callbacks=[]",
        f"--trainer.limit_train_batches={batches}",
        "--trainer.limit_val_batches=4",
        f"--data.data_dir={data_dir}",
    ]


def sweep_file(folder: Path, name: str = "tiny", space: dict | None = None, **keys: Any) -> Path:
    spec = {"base_config": str(REPO / "configs" / "fast.yaml"), "n_trials": 4, "seed": 0, **keys}
    spec["space"] = SPACE if space is None else space
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def load(folder: Path, name: str = "tiny", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{folder / 'lightning_logs' / 'sweeps' / name}.db"
    return optuna.load_study(study_name=name, storage=url)


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.trials]


def assert_no_values_twice(trials: list) -> None:
    """No two trials of ``trials`` sampled the same values for every option."""
    values = [tuple(sorted(trial.params.items())) for trial in trials]
    assert len(set(values)) == len(values), values


def start_worker(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist_pl", "sweep", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen, timeout: float = 300) -> str:
    _, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow
def test_a_sweep_on_sqlite_writes_its_trials_summary_pictures_and_a_best_config_that_fits_again(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    spec = sweep_file(tmp_path)
    run_main(["sweep", "--config", str(spec), *trial_options(real_data_dir)], tmp_path, monkeypatch)
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    study = load(tmp_path)
    assert states(study) == ["COMPLETE"] * 4
    # The first trial is the base config itself (fast.yaml's own values lie in the space).
    assert study.trials[0].params == {
        "model.scheduler.init_args.max_lr": 0.008,
        "model.net.init_args.hidden_sizes": "[256, 128]",
    }
    sweep = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    for trial in study.trials:
        folder = sweep / f"trial_{trial.number:04d}"
        assert (folder / "config.yaml").is_file() and list(folder.glob("events.out.tfevents.*"))
        record = yaml.safe_load((folder / "trial.yaml").read_text())
        assert record["state"] == "complete" and record["value"] == pytest.approx(trial.value)
        hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
        assert hparams["sweep/trial"] == trial.number
        assert hparams["sweep/model.scheduler.init_args.max_lr"] == pytest.approx(
            trial.params["model.scheduler.init_args.max_lr"]
        )
        assert scalars(folder)["val/acc"][-1] == pytest.approx(trial.value)
    with open(sweep / "summary.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [int(row["trial"]) for row in rows] == [0, 1, 2, 3] and {row["state"] for row in rows} == {"complete"}
    assert [row["note"] for row in rows] == ["the base config", "", "", ""]
    for picture in ("history.png", "parallel.png", "importances.png"):
        assert (sweep / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the pictures say: the metric by name, whole trial numbers, every option by a distinct short name.
    axes = report.pictures(study)
    assert axes["history.png"].get_ylabel() == "val/acc"
    assert all(float(tick).is_integer() for tick in axes["history.png"].get_xticks())
    labels = [tick.get_text() for tick in axes["parallel.png"].get_xticklabels()]
    assert labels == ["val/acc", "net.hidden_sizes", "scheduler.max_lr"]
    importance_labels = {tick.get_text() for tick in axes["importances.png"].get_yticklabels()}
    assert importance_labels == {"net.hidden_sizes", "scheduler.max_lr"}
    best = sweep / "best.yaml"
    assert last_line.endswith("fit it again: python -m fmnist_pl fit --config lightning_logs/sweeps/tiny/best.yaml")
    # The best config alone (the trial options are in it) reproduces the best trial's validation accuracy.
    cli = run_main(["fit", "--config", str(best), "--trainer.logger.init_args.save_dir=again"], tmp_path, monkeypatch)
    assert float(cli.trainer.callback_metrics["val/acc"]) == pytest.approx(study.best_value, abs=1e-6)
    assert Path(cli.trainer.logger.log_dir).parent.name == "tiny-best"
    # Run again: the study has its 4 trials, nothing more is trained.
    run_main(["sweep", "--config", str(spec), *trial_options(real_data_dir)], tmp_path, monkeypatch)
    assert len(load(tmp_path).trials) == 4


def good_then_bad_trial(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, epochs: int) -> optuna.Study:
    """A sweep of two queued trials, a good learning rate then a clearly bad one (10), pruning after one."""
    space = {"model.scheduler.init_args.max_lr": {"choices": [0.008, 10.0]}}
    spec = sweep_file(tmp_path, space=space, n_trials=2, pruner_startup_trials=1)
    storage = f"sqlite:///{tmp_path / 'lightning_logs' / 'sweeps' / 'tiny'}.db"
    (tmp_path / "lightning_logs" / "sweeps").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    study.enqueue_trial({"model.scheduler.init_args.max_lr": 0.008})
    study.enqueue_trial({"model.scheduler.init_args.max_lr": 10.0})
    run_main(["sweep", "--config", str(spec), *trial_options(data_dir, epochs=epochs)], tmp_path, monkeypatch)
    return load(tmp_path)


@pytest.mark.slow
def test_a_clearly_bad_trial_is_pruned_after_its_first_validation(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = good_then_bad_trial(tmp_path, real_data_dir, monkeypatch, epochs=3)
    assert states(study) == ["COMPLETE", "PRUNED"]
    assert sorted(study.trials[1].intermediate_values) == [0]
    folder = tmp_path / "lightning_logs" / "sweeps" / "tiny" / "trial_0001"
    record = yaml.safe_load((folder / "trial.yaml").read_text())
    assert record["state"] == "pruned" and "epoch 0" in record["reason"]
    assert len(scalars(folder)["val/acc"]) == 1  # one validation, no second epoch


@pytest.mark.slow
def test_the_validation_after_the_last_batch_is_reported_but_never_pruned(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = good_then_bad_trial(tmp_path, real_data_dir, monkeypatch, epochs=1)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert study.trials[1].value < study.trials[0].value
    assert study.trials[1].intermediate_values == {0: pytest.approx(study.trials[1].value)}


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_by_the_next_run_and_no_finished_trial_repeats(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sweep_file(tmp_path, n_trials=2)
    marker = tmp_path / "hanging"
    hang = ["--trainer.callbacks+=tests.probes.HangInRun", "--trainer.callbacks.run=trial_0001"]
    hang += [f"--trainer.callbacks.marker={marker}"]
    args = ["--config", str(spec), "--heartbeat=1", *trial_options(real_data_dir), *hang]
    worker = start_worker(args, tmp_path)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the second trial never started: " + (worker.stderr.read() if worker.poll() else "")
    # The worker waits inside trial 1 (its retry, trial 2, goes through): kill it there.
    running = [t for t in load(tmp_path).trials if t.state == TrialState.RUNNING]
    assert [t.number for t in running] == [1]
    killed_trial = running[0]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # The same command again (in this process): it waits for the dead trial's heartbeat to go stale.
    run_main(["sweep", *args], tmp_path, monkeypatch)
    study = load(tmp_path)
    by_state = {state: [t for t in study.trials if t.state == state] for state in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 2
    assert [t.number for t in by_state[TrialState.FAIL]] == [killed_trial.number]
    retried = [t for t in by_state[TrialState.COMPLETE] if t.system_attrs.get("failed_trial") == killed_trial.number]
    assert len(retried) == 1 and retried[0].params == killed_trial.params
    # Each finished trial was trained once: one run folder each, with one complete record.
    runs = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    records = [yaml.safe_load(p.read_text()) for p in runs.glob("trial_*/trial.yaml")]
    assert sorted(r["number"] for r in records if r["state"] == "complete") == sorted(
        t.number for t in by_state[TrialState.COMPLETE]
    )


def two_workers_share_one_study(tmp_path: Path, data_dir: Path, storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker in a process of its own, the other in this one (a second import of torch adds nothing)."""
    spec = sweep_file(tmp_path, n_trials=4)
    args = ["--config", str(spec), f"--storage={storage}", *trial_options(data_dir, batches=20)]
    other = start_worker(args, tmp_path)
    deadline = time.monotonic() + 120
    runs = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    while time.monotonic() < deadline and not list(runs.glob("trial_*")) and other.poll() is None:
        time.sleep(0.1)  # until the other worker trains a trial (seen on disk), so both get some
    run_main(["sweep", *args], tmp_path, monkeypatch)
    finish(other)
    study = load(tmp_path, storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert len({t.user_attrs["worker"] for t in complete}) == 2, "both workers ran trials"
    assert_no_values_twice(complete)
    # Anything beyond the four was handed out at the same moment as the last ones and not trained.
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state != TrialState.COMPLETE)
    runs = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    assert sorted(p.name for p in runs.glob("trial_*")) == [f"trial_{t.number:04d}" for t in complete]


@pytest.mark.slow
def test_two_workers_on_one_sqlite_file_share_the_trials(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_workers_share_one_study(tmp_path, real_data_dir, f"sqlite:///{tmp_path / 'shared.db'}", monkeypatch)


@pytest.mark.slow
def test_two_workers_on_a_real_postgresql_server_share_the_trials(
    tmp_path: Path, real_data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_workers_share_one_study(tmp_path, real_data_dir, postgres_url, monkeypatch)


def test_workers_on_one_machine_split_its_cores_and_keep_below_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = optuna.create_study()  # in memory: only the records of the running trials count here
    other = study.ask()  # a trial that another worker on this machine is running
    other.set_user_attr("host", socket.gethostname())
    other.set_user_attr("worker", os.getpid() + 1)
    elsewhere = study.ask()  # one on another machine takes none of these cores
    elsewhere.set_user_attr("host", socket.gethostname() + "-other")
    elsewhere.set_user_attr("worker", os.getpid() + 2)
    cores = os.cpu_count() or 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_worker(study) == max(1, cores // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_worker(study) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads_per_worker(study) == max(1, cores // 2)


@pytest.mark.parametrize(
    ("keys", "extra", "expected"),
    [
        ({"space": {"model.no_such_option": {"low": 0.0, "high": 1.0}}}, [], "model.no_such_option"),
        ({"space": {}}, [], "the space is empty"),
        ({"base_config": "configs/missing.yaml"}, [], "base_config 'configs/missing.yaml' does not exist"),
        ({"metric": "test/acc"}, [], "choose on the validation split"),
        ({}, ["--n_trials=0"], "--n_trials must be at least 1"),
        ({}, ["--storage=sqlite:////proc/no/such.db"], "--storage sqlite:////proc/no/such.db: cannot"),
        ({}, ["--storage=postgresql+psycopg://nobody@127.0.0.1:9/none"], "--storage postgresql+psycopg://"),
        # Options under which no trial could report the metric: refused before anything trains.
        (
            {},
            ["--trainer.callbacks=[]", "--trainer.check_val_every_n_epoch=3", "--trainer.max_epochs=2"],
            "sweep: no trial would log val/acc: --trainer.check_val_every_n_epoch 3 is more than "
            "--trainer.max_epochs 2, so no fit validates; give --trainer.check_val_every_n_epoch 2 as well",
        ),
        ({}, ["--trainer.limit_val_batches=0"], "--trainer.limit_val_batches 0.0 turns validation off"),
        (
            {"space": {**SPACE, "trainer.max_epochs": {"low": 4, "high": 10}}},
            ["--trainer.callbacks=[]", "--trainer.check_val_every_n_epoch=8"],
            "space.trainer.max_epochs can take 4, and then --trainer.check_val_every_n_epoch 8 is more than",
        ),
        ({"metric": "val/acc_typo"}, [], "metric val/acc_typo is never logged; a validation logs val/loss, val/acc"),
        # A misspelt trial option is the command line's, with the closest real one.
        (
            {},
            ["--trainer.max_epoch=2"],
            "sweep: a trial option on the command line: unknown option --trainer.max_epoch; "
            "did you mean --trainer.max_epochs?",
        ),
    ],
    ids=[
        "unknown-option",
        "empty-space",
        "missing-base",
        "test-metric",
        "no-trials",
        "unwritable",
        "unreachable",
        "validated-after-the-end",
        "no-validation",
        "space-below-the-validation",
        "metric-never-logged",
        "misspelt-trial-option",
    ],
)
def test_bad_sweep_input_is_one_line_and_leaves_no_study(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    keys: dict,
    extra: list,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = sweep_file(tmp_path, **keys)
    code, err = exit_of_main(["sweep", "--config", str(spec), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "lightning_logs").exists()


def test_a_missing_sweep_file_lists_the_sweep_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(REPO)
    code, err = exit_of_main(["sweep", "--config", "configs/sweeps/nope.yaml"], capsys)
    listed = ", ".join(f"configs/sweeps/{path.name}" for path in sorted((REPO / "configs" / "sweeps").glob("*.yaml")))
    assert (
        code == 2
        and err.strip() == f"error: --config configs/sweeps/nope.yaml: no such sweep file; the sweeps here: {listed}"
    )


@pytest.mark.slow
def test_a_resumed_sweep_samples_new_values_and_a_new_study_with_the_same_seed_repeats_itself(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    spec = sweep_file(tmp_path, n_trials=3)
    for total in (2, 3):  # two trials, then the same command resumed up to three
        run_main(
            ["sweep", "--config", str(spec), f"--n_trials={total}", *trial_options(real_data_dir, batches=2)],
            tmp_path,
            monkeypatch,
        )
    resumed = load(tmp_path).trials
    assert [t.state for t in resumed] == [TrialState.COMPLETE] * 3
    assert_no_values_twice(resumed)
    run_main(
        ["sweep", "--config", str(spec), "--study_name=again", *trial_options(real_data_dir, batches=2)],
        tmp_path,
        monkeypatch,
    )
    assert [t.params for t in load(tmp_path, "again").trials] == [t.params for t in resumed]
    assert "LightningCLI's args parameter" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_trial_is_one_line_and_a_new_study_moves_the_old_folder_aside(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = sweep_file(tmp_path, n_trials=1)
    options = trial_options(real_data_dir, batches=2)
    code, err = exit_of_main(
        ["sweep", "--config", str(spec), *options, "--model.optimizer.init_args.weight_decay=-1"], capsys
    )
    sweep = Path("lightning_logs") / "sweeps" / "tiny"
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "error: sweep tiny: trial 0 failed: ValueError: Invalid weight_decay value: -1.0 "
        f"(recorded in {sweep / 'trial_0000' / 'trial.yaml'})"
    )
    record = yaml.safe_load((sweep / "trial_0000" / "trial.yaml").read_text())
    assert record["state"] == "failed" and "Invalid weight_decay" in record["error"]
    # A new study of the same name (another storage): the earlier folder is moved aside, not written into.
    run_main(
        ["sweep", "--config", str(spec), f"--storage=sqlite:///{tmp_path / 'new.db'}", *options], tmp_path, monkeypatch
    )
    assert f"the earlier one's trials moved aside to {sweep.parent / 'tiny.earlier-1'}" in capsys.readouterr().err
    assert yaml.safe_load((sweep / "trial_0000" / "trial.yaml").read_text())["state"] == "complete"
    assert len(list((sweep / "trial_0000").glob("events.out.tfevents.*"))) == 1
    assert (
        yaml.safe_load((sweep.parent / "tiny.earlier-1" / "trial_0000" / "trial.yaml").read_text())["state"] == "failed"
    )


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_sweep_names_options_the_cli_has_and_starts_from_its_base_config(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    spec = load_spec(path)
    base = check_options(FashionCLI, spec, ["fit", "--config", str(spec.base_config)], path)
    options = sorted(parameter.option for parameter in spec.space)
    assert sorted(base) == options, "the base config lies outside the space"
