"""A recipe's length is ``--trainer.max_epochs`` alone: the schedule spans the run, validation comes once
at the end, and both checkpoints are written; read back from the run's TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.callbacks.validate_at_end import ValidateOnceAtTheEnd
from fmnist_pl.errors import ConfigError

from .helpers import QUIET, REPO, exit_of_main, run_main, scalar_steps

BATCHES = 10  # training batches an epoch, to keep each fit to seconds


def fit(config: str, epochs: int, data_dir: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch, *extra: str):
    return run_main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / config),
            *QUIET,
            f"--data.data_dir={data_dir}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.limit_train_batches={BATCHES}",
            "--trainer.limit_val_batches=2",
            "--trainer.callbacks+=LearningRateMonitor",
            "--trainer.log_every_n_steps=1",
            *extra,
        ],
        cwd,
        monkeypatch,
    )


@pytest.mark.parametrize("epochs", [1, 3])
def test_fast_yaml_with_max_epochs_alone_is_a_complete_recipe(
    epochs: int, real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = fit("fast.yaml", epochs, real_data_dir, tmp_path, monkeypatch)
    run = Path(cli.trainer.log_dir)
    steps = epochs * BATCHES
    rates = scalar_steps(run, "lr-AdamW")
    assert [step for step, _ in rates] == list(range(steps))  # logged before every optimizer step
    values = [rate for _, rate in rates]
    max_lr = 0.008
    peak = max(range(steps), key=values.__getitem__)
    # One cycle over exactly this run: it starts at max_lr / 25, peaks in its first half near max_lr,
    # and its last step is at max_lr / 25 / 10^4.
    assert values[0] == pytest.approx(max_lr / 25) and 0 < peak < steps / 2 and values[peak] > 0.6 * max_lr
    assert values[-1] == pytest.approx(max_lr / 25 / 1e4, rel=1e-3)
    validations = scalar_steps(run, "val/acc")
    assert len(validations) == 1 and validations[0][0] == steps - 1  # once, after the last step
    names = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert names == sorted(["last.ckpt", next(name for name in names if name.startswith("best-epoch"))])
    assert f"best-epoch{epochs - 1:02d}-" in " ".join(names)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["lr_schedulers"][0]["total_steps"] == steps


def test_a_cosine_schedule_without_t_max_falls_to_its_end_over_the_run(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = fit("best_without_teacher.yaml", 3, real_data_dir, tmp_path, monkeypatch, "--figures.enabled=false")
    rates = [rate for _, rate in scalar_steps(Path(cli.trainer.log_dir), "lr-AdamW")]
    lr = 0.001354560292744504
    # Logged at each epoch's start: T_max = 3 epochs, so cos steps of a third of the half-period.
    expected = [lr * (1 + torch.cos(torch.tensor(torch.pi * epoch / 3)).item()) / 2 for epoch in range(3)]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert cli.trainer.lr_scheduler_configs[0].scheduler.T_max == 3
    assert len(scalar_steps(Path(cli.trainer.log_dir), "val/acc")) == 3  # this config validates each epoch


def test_a_given_length_is_used_as_given(real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = fit("fast.yaml", 1, real_data_dir, tmp_path, monkeypatch, "--model.scheduler.init_args.total_steps=40")
    assert cli.trainer.lr_scheduler_configs[0].scheduler.total_steps == 40


def test_validate_once_at_the_end_refuses_what_would_contradict_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    config = ["fit", "--config", str(REPO / "configs" / "fast.yaml"), *QUIET]
    code, err = exit_of_main([*config, "--trainer.check_val_every_n_epoch=2"], capsys)
    assert code == 2 and "--trainer.check_val_every_n_epoch 2 and ValidateOnceAtTheEnd" in err
    with pytest.raises(ConfigError, match="measured in steps"):
        trainer = type("Steps", (), {"max_epochs": -1, "max_steps": 100, "check_val_every_n_epoch": 1})()
        ValidateOnceAtTheEnd().setup(trainer, None, "fit")
