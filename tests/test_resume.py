"""Crashes and resumes, end to end: kill -9 mid-epoch then ``fit --ckpt_path last``; a NaN loss."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import torch

from .helpers import QUIET, REPO, exit_of_main, run_cli, run_main, scalars

# dropout.yaml (dropout, flips, shuffling: all three draw random numbers) with an optimizer and a
# scheduler that both carry state, shrunk to a few seconds: 3 epochs of 16 batches. The one-cycle
# schedule takes its length from the Trainer, which reads it before the checkpoint is restored.
RUN = [
    "fit",
    "--config",
    str(REPO / "configs" / "dropout.yaml"),
    *QUIET,
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=16",
    "--trainer.limit_val_batches=3",
    "--figures.enabled=false",
    "--model.optimizer=torch.optim.AdamW",
    "--model.optimizer.lr=0.002",
    "--model.scheduler=torch.optim.lr_scheduler.OneCycleLR",
    "--model.scheduler.max_lr=0.004",
    "--model.scheduler_interval=step",
]
EPOCH_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best")


def run_folder(cwd: Path) -> Path:
    return cwd / "lightning_logs" / "dropout" / "version_0"


@pytest.fixture(scope="module", params=["tensor", "torchvision"])
def uninterrupted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path):
    """RUN on one data path, start to end without a stop: its data options and its run folder."""
    from fmnist_pl.cli import main

    data = (f"--data.data_dir={real_data_dir}", f"--data.loader={request.param}")
    whole = tmp_path_factory.mktemp(f"whole-{request.param}")
    # Lightning's own mid-epoch checkpoint as well (at step 26: epoch 1, after its 10th batch);
    # writing it changes nothing in the run.
    every_n_steps = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=26",
        "--trainer.callbacks.filename=mid-{step}",
        "--trainer.callbacks.save_top_k=-1",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(whole)
        main([*RUN, *data, *every_n_steps])
    return data, run_folder(whole)


def assert_ends_like(expected_run: Path, got_run: Path, tags: tuple[str, ...] = EPOCH_TAGS) -> None:
    """The same last checkpoint (epoch, weights, optimizer and scheduler state), best checkpoint and curves."""
    expected, got = scalars(expected_run), scalars(got_run)
    for tag in tags:
        assert len(got[tag]) == 3, tag
        torch.testing.assert_close(torch.tensor(got[tag]), torch.tensor(expected[tag]), msg=tag)
    expected_last = torch.load(expected_run / "checkpoints" / "last.ckpt", weights_only=True)
    got_last = torch.load(got_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert got_last["epoch"] == expected_last["epoch"] == 2
    torch.testing.assert_close(got_last["state_dict"], expected_last["state_dict"])
    torch.testing.assert_close(got_last["optimizer_states"], expected_last["optimizer_states"])
    assert got_last["lr_schedulers"] == expected_last["lr_schedulers"]
    best = sorted(p.name for p in (got_run / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (expected_run / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.slow
def test_killed_mid_epoch_then_resumed_ends_like_an_uninterrupted_run(
    uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data, whole = uninterrupted
    probe = ["--trainer.callbacks+=tests.probes.KillAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=9"]
    killed = run_cli([*RUN, *data, *probe], cwd=tmp_path, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    # The kill needs a process of its own; the resume is a new CLI in this one.
    capsys.readouterr()
    run_main([*RUN, *data, "--ckpt_path", "last"], tmp_path, monkeypatch)
    expected_ckpt = Path("lightning_logs") / "dropout" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"--ckpt_path last: resuming from {expected_ckpt}" in capsys.readouterr().err
    # The resumed run went on in the same folder: one run, the same checkpoints, the same curves.
    assert_ends_like(whole, run_folder(tmp_path))


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_exits_143_and_the_resumed_run_ends_like_an_uninterrupted_one(
    uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data, whole = uninterrupted
    # In-process: the signal reaches the handler Lightning installs for the fit, and main's exit
    # status is the process's (a subprocess would add only the 6 s of importing torch).
    probe = ["--trainer.callbacks+=tests.probes.SignalAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=9"]
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main([*RUN, *data, *probe], capsys)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    last_ckpt = Path("lightning_logs") / "dropout" / "version_0" / "checkpoints" / "last.ckpt"
    assert err.strip().splitlines()[-1] == (
        f"error: stopped by SIGTERM at epoch 1, after batch 10 of 16; saved {last_ckpt}; "
        "to go on, run the same command with --ckpt_path last"
    )
    saved = torch.load(tmp_path / last_ckpt, weights_only=True)
    assert saved["epoch"] == 1 and saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 10

    run_main([*RUN, *data, "--ckpt_path", "last"], tmp_path, monkeypatch)
    assert f"--ckpt_path last: resuming from {last_ckpt}" in capsys.readouterr().err
    # Epoch 1's train/ scalars are the mean over the batches after the resume only; the rest match.
    assert_ends_like(whole, run_folder(tmp_path), tags=("val/loss", "val/acc", "val/acc_best"))


def test_resuming_from_lightnings_every_n_train_steps_checkpoint_ends_like_an_uninterrupted_run(
    uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ModelCheckpoint(every_n_train_steps=N)`` saves mid-epoch; resuming from it goes on with the
    next batch (Lightning alone restarts a non-resumable loader's epoch from its first batch)."""
    data, whole = uninterrupted
    middle = tmp_path / "mid-step=26.ckpt"
    shutil.copy(whole / "checkpoints" / "mid-step=26.ckpt", middle)
    run_main([*RUN, *data, f"--ckpt_path={middle}"], tmp_path, monkeypatch)
    assert_ends_like(whole, run_folder(tmp_path), tags=())


@pytest.mark.slow
def test_sigterm_during_validation_saves_nothing_new_and_exits_143(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    probe = ["--trainer.callbacks+=tests.probes.SignalAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=0"]
    code, err = exit_of_main(
        [*RUN, f"--data.data_dir={real_data_dir}", *probe, "--trainer.callbacks.evaluation=true"], capsys
    )
    last_ckpt = Path("lightning_logs") / "dropout" / "version_0" / "checkpoints" / "last.ckpt"
    assert code == 143
    assert err.strip().splitlines()[-1] == (
        f"error: stopped by SIGTERM at epoch 1; {last_ckpt} holds the last completed epoch; "
        "to go on, run the same command with --ckpt_path last"
    )
    assert torch.load(last_ckpt, weights_only=True)["epoch"] == 0


@pytest.mark.parametrize("command", ["test", "predict"])
def test_sigterm_during_test_or_predict_exits_143_and_writes_nothing(
    command: str,
    trained_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    probe = ["--trainer.callbacks+=tests.probes.SignalAt", "--trainer.callbacks.epoch=0", "--trainer.callbacks.batch=0"]
    code, err = exit_of_main(
        [
            command,
            f"--ckpt_path={trained_checkpoint}",
            f"--trainer.limit_{command}_batches=3",
            f"--predictions.output={tmp_path / 'out.csv'}",
            *probe,
            "--trainer.callbacks.evaluation=true",
        ],
        capsys,
    )
    assert code == 143 and err.strip().splitlines()[-1] == "error: stopped by SIGTERM"
    assert not (tmp_path / "out.csv").exists()


def test_sigusr1_under_slurm_keeps_lightnings_requeue_checkpoint(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """SLURM sends SIGUSR1 before a job's time runs out; Lightning then saves ``hpc_ckpt_1.ckpt``
    and asks ``scontrol`` to requeue the job (not on this machine: it says the requeue failed), and
    the fit goes on. Nothing of this project's stands in its way."""
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242"}.items():
        monkeypatch.setenv(name, value)
    for name in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"):
        monkeypatch.setenv(name, "0")
    probe = ["--trainer.callbacks+=tests.probes.SignalAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=3"]
    run_main(
        [*RUN, f"--data.data_dir={real_data_dir}", *probe, "--trainer.callbacks.name=SIGUSR1"], tmp_path, monkeypatch
    )
    hpc = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["epoch"] == 1
    last = torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2


def test_resume_from_last_without_earlier_runs_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main([*RUN, "--ckpt_path", "last"], capsys)
    assert code == 2
    assert err.strip() == (
        "error: --ckpt_path last: no earlier run of this config has a last.ckpt "
        "(looked for lightning_logs/dropout/*/checkpoints/last.ckpt); "
        "train without --ckpt_path, or give a checkpoint's path."
    )


@pytest.mark.slow
def test_non_finite_loss_stops_training_and_keeps_the_good_checkpoints(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(
        [
            *RUN,
            f"--data.data_dir={real_data_dir}",
            "--trainer.callbacks+=tests.probes.PoisonAt",
            "--trainer.callbacks.epoch=1",
            "--trainer.callbacks.batch=1",
        ],
        capsys,
    )
    assert code == 2
    # 16 steps an epoch: batch 1 of epoch 1 is optimizer step 17 (counted from 0).
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: training loss is nan at epoch 1, step 17; training stopped"), err[-2000:]
    assert "Traceback" not in err
    checkpoints = run_folder(tmp_path) / "checkpoints"
    for path in checkpoints.glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["epoch"] == 0, path.name
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()), path.name
    assert len(scalars(run_folder(tmp_path))["val/acc"]) == 1
