"""Lightning's own flags and callbacks keep their documented meaning: one test per habit, each
asserting the effect (steps taken, norms bounded, curves logged), through the real CLI in-process."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    LearningRateFinder,
    LearningRateMonitor,
    StochasticWeightAveraging,
    TQDMProgressBar,
)
from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

from fmnist_pl.callbacks.preemption import CheckpointOnSigterm
from fmnist_pl.cli import FashionCLI, main
from fmnist_pl.module import FashionClassifier

from .helpers import QUIET, REPO, exit_of_main, hparams_sessions, scalar_steps, scalars
from .probes import EpochBatches

SEED = str(REPO / "configs" / "seed.yaml")
DROPOUT = str(REPO / "configs" / "dropout.yaml")


@pytest.fixture
def fit(tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """``fit(*options, config=SEED)``: a fit through the CLI's entry point in ``tmp_path``; returns the CLI."""
    monkeypatch.chdir(tmp_path)

    def run(*options: str, config: str = SEED) -> FashionCLI:
        # No figures unless a test looks at them: drawing them costs ~0.5 s a run.
        return main(
            ["fit", "--config", config, *QUIET, "--figures.enabled=false", f"--data.data_dir={real_data_dir}", *options]
        )

    return run


def callback(cli: FashionCLI, kind: type):
    (found,) = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_limit_train_batches_and_max_steps_count_optimizer_steps(fit, loader: str) -> None:
    cli = fit(
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=5",
        "--trainer.limit_val_batches=2",
        f"--data.loader={loader}",
    )
    assert cli.trainer.global_step == 10 and cli.trainer.num_training_batches == 5
    cli = fit("--trainer.max_steps=7", "--trainer.limit_val_batches=2", f"--data.loader={loader}")
    assert cli.trainer.global_step == 7


def test_the_progress_bar_counts_batches(fit) -> None:
    cli = fit("--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=true")
    # 55,000 training images in batches of 64: 859 full batches and one of 24.
    assert cli.trainer.progress_bar_callback.total_train_batches == 860


def drawn_counts(output: str, description: str) -> list[int]:
    """The batch counts that bars named ``description`` showed, draw by draw (tqdm on stdout, where
    Lightning draws it)."""
    return [int(n) for n in re.findall(rf"{description}: +\d+%\|[^|]*\| (\d+)/\d+", output)]


def test_the_default_bar_is_lightnings_redrawn_every_20_batches_and_at_each_loops_last(
    fit, capfd: pytest.CaptureFixture
) -> None:
    options = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=30", "--trainer.limit_val_batches=3"]
    cli = fit(*options, "--trainer.enable_progress_bar=true")
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 20
    drawn = capfd.readouterr().out
    assert set(drawn_counts(drawn, "Epoch 1")) <= {0, 20, 30} and drawn_counts(drawn, "Epoch 1")[-1] == 30
    assert drawn_counts(drawn, "Validation DataLoader 0")[-1] == 3
    # A bar the user gives is used as given: Lightning's default draws every batch.
    fit(*options, "--trainer.callbacks+=TQDMProgressBar", "--trainer.enable_progress_bar=true")
    assert set(range(1, 31)) <= set(drawn_counts(capfd.readouterr().out, "Epoch 1"))


def test_the_default_bar_of_test_draws_its_last_batch(fit, real_data_dir: Path, capfd: pytest.CaptureFixture) -> None:
    cli = fit("--trainer.max_steps=2", "--trainer.limit_val_batches=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    main(["test", "--config", SEED, "--ckpt_path", str(last), *QUIET, "--figures.enabled=false",
          f"--data.data_dir={real_data_dir}", "--trainer.limit_test_batches=7",
          "--trainer.enable_progress_bar=true"])  # fmt: skip
    drawn = drawn_counts(capfd.readouterr().out, "Testing DataLoader 0")
    assert drawn[-1] == 7 and set(drawn) <= {0, 7}


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "measured"), [("norm", "norms"), ("value", "max_abs")])
def test_gradient_clipping_bounds_what_the_optimizer_applies(fit, algorithm: str, measured: str) -> None:
    common = [
        "--trainer.max_steps=20",
        "--trainer.limit_val_batches=0",
        "--model.optimizer=tests.probes.NormRecordingSGD",
        "--model.optimizer.lr=0.5",
    ]
    free = getattr(fit(*common).trainer.optimizers[0], measured)
    bound = 0.25 * min(free)  # well below every unclipped gradient, so each step is clipped
    clipped = getattr(
        fit(
            *common, "--trainer.gradient_clip_val", str(bound), f"--trainer.gradient_clip_algorithm={algorithm}"
        ).trainer.optimizers[0],
        measured,
    )
    assert len(clipped) == 20
    assert max(clipped) <= bound * (1 + 1e-4)
    assert min(clipped) >= bound * 0.99  # clipped down to the bound, not zeroed


@pytest.mark.slow
def test_accumulating_two_batches_of_64_equals_one_batch_of_128(fit) -> None:
    # SGD without dropout or shuffling: the accumulated gradient is the mean over 128 images.
    options = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--model.optimizer.lr=0.1"]
    accumulated = fit(*options, "--trainer.limit_train_batches=16", "--trainer.accumulate_grad_batches=2")
    large = fit(*options, "--trainer.limit_train_batches=8", "--data.batch_size=128")
    assert accumulated.trainer.global_step == large.trainer.global_step == 8
    for a, b in zip(accumulated.model.parameters(), large.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("interval", "per_epoch"), [("0.5", 2), ("5", 2), ("1.0", 1)])
def test_val_check_interval_validates_within_the_epoch_and_the_run_finishes(fit, interval: str, per_epoch: int) -> None:
    cli = fit(
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=10",
        "--trainer.limit_val_batches=2",
        f"--trainer.val_check_interval={interval}",
        "--figures.enabled=true",
        "--figures.every_n_epochs=1",
    )
    logged = scalars(Path(cli.trainer.log_dir))
    assert len(logged["val/acc"]) == 2 * per_epoch
    assert len(logged["train/acc"]) == 2 and "hp/val_acc" in logged


def test_no_validation_at_all_finishes_with_figures_and_hparams(fit) -> None:
    cli = fit(
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=5",
        "--trainer.limit_val_batches=0",
        "--figures.enabled=true",
    )
    run_dir = Path(cli.trainer.log_dir)
    logged = scalars(run_dir)
    assert "val/acc" not in logged and len(logged["train/acc"]) == 2
    assert logged["hp/train_acc"] == [pytest.approx(logged["train/acc"][-1])]
    assert hparams_sessions(run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_plateau_scheduler_skips_epochs_without_validation_and_takes_any_monitor(fit) -> None:
    plateau = [
        "--model.scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--trainer.max_epochs=4",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
    ]
    cli = fit(*plateau, "--trainer.check_val_every_n_epoch=2")
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 2  # stepped after epochs 1 and 3, the ones that validated
    cli = fit(*plateau, "--trainer.check_val_every_n_epoch=2", "--model.scheduler_monitor=train/loss")
    assert cli.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4


def test_one_cycle_stepped_per_step_peaks_at_its_step_and_the_lr_monitor_sees_every_step(fit) -> None:
    cli = fit(
        "--trainer.max_steps=20",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=1",
        "--model.scheduler=torch.optim.lr_scheduler.OneCycleLR",
        "--model.scheduler.max_lr=0.1",
        "--model.scheduler.total_steps=20",
        "--model.scheduler.pct_start=0.25",
        "--model.scheduler_interval=step",
        "--trainer.callbacks+=LearningRateMonitor",
        "--trainer.callbacks.logging_interval=step",
    )
    logged = scalar_steps(Path(cli.trainer.log_dir), "lr-SGD")
    by_hand = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.zeros(1)], lr=0.01), max_lr=0.1, total_steps=20, pct_start=0.25
    )
    expected = []
    for _ in range(20):
        expected.append(by_hand.get_last_lr()[0])
        by_hand.optimizer.step()
        by_hand.step()
    assert [step for step, _ in logged] == list(range(20))
    torch.testing.assert_close(torch.tensor([lr for _, lr in logged]), torch.tensor(expected))
    # torch's OneCycleLR peaks after pct_start * total_steps - 1 steps.
    assert max(range(20), key=lambda i: logged[i][1]) == 4 and logged[4][1] == pytest.approx(0.1)
    assert callback(cli, LearningRateMonitor).logging_interval == "step"


def test_log_every_n_steps_sets_how_often_per_step_values_are_written(fit) -> None:
    cli = fit(
        "--trainer.max_steps=12",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=4",
        "--trainer.callbacks+=LearningRateMonitor",
        "--trainer.callbacks.logging_interval=step",
    )
    assert [step for step, _ in scalar_steps(Path(cli.trainer.log_dir), "lr-SGD")] == [3, 7, 11]


def test_ema_weight_averaging_updates_after_every_optimizer_step_and_is_what_is_saved(fit) -> None:
    cli = fit(
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=2",
        "--trainer.accumulate_grad_batches=2",
        "--trainer.callbacks+=EMAWeightAveraging",
        "--trainer.callbacks.decay=0.9",
    )
    ema = callback(cli, EMAWeightAveraging)
    assert cli.trainer.global_step == 6 and int(ema._average_model.n_averaged) == 6
    last = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    averaged = {
        k.removeprefix("module."): v for k, v in ema._average_model.state_dict().items() if k.startswith("module.")
    }
    torch.testing.assert_close(last["state_dict"]["net.layers.1.weight"], averaged["net.layers.1.weight"])
    assert not torch.equal(
        last["state_dict"]["net.layers.1.weight"], last["current_model_state"]["net.layers.1.weight"]
    )


def test_stochastic_weight_averaging_runs_on_its_epochs(fit) -> None:
    cli = fit(
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=2",
        "--trainer.callbacks+=StochasticWeightAveraging",
        "--trainer.callbacks.swa_lrs=0.005",
        "--trainer.callbacks.swa_epoch_start=1",
        "--trainer.callbacks.annealing_epochs=1",
    )
    swa = callback(cli, StochasticWeightAveraging)
    # One update per epoch from swa_epoch_start to its last epoch (Lightning adds one epoch at the end).
    # swa_epoch_start counts from 1: epochs 0, 1 and 2 are averaged.
    assert swa.swa_start == 0 and int(swa.n_averaged) == swa.swa_end - swa.swa_start + 1 == 3
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)


def test_checkpoint_every_n_train_steps_counts_optimizer_steps(fit, tmp_path: Path) -> None:
    fit(
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=10",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=4",
        f"--trainer.callbacks.dirpath={tmp_path / 'steps'}",
        "--trainer.callbacks.filename={step}",
        "--trainer.callbacks.save_top_k=-1",
    )
    assert sorted(p.name for p in (tmp_path / "steps").glob("*.ckpt")) == ["step=4.ckpt", "step=8.ckpt"]


@pytest.mark.slow
def test_mixed_precision_trains_close_to_full_precision(fit) -> None:
    options = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=20", "--trainer.limit_val_batches=4"]
    full = fit(*options).trainer.callback_metrics
    mixed = fit(*options, "--trainer.precision=bf16-mixed").trainer.callback_metrics
    assert mixed["train/loss"] != full["train/loss"]  # bfloat16 matrix products really ran
    assert mixed["train/loss"] == pytest.approx(full["train/loss"].item(), rel=0.02)


def test_deterministic_runs_repeat(fit) -> None:
    options = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=10",
        "--trainer.limit_val_batches=2",
        "--trainer.deterministic=true",
    ]
    first, second = fit(*options, config=DROPOUT), fit(*options, config=DROPOUT)
    assert torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    assert first.trainer.callback_metrics == second.trainer.callback_metrics


def test_fast_dev_run_takes_one_step_and_writes_nothing(fit, tmp_path: Path) -> None:
    cli = fit("--trainer.fast_dev_run=true")
    assert cli.trainer.global_step == 1
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_overfit_batches_trains_on_the_same_batches_every_epoch(fit, loader: str) -> None:
    # dropout.yaml shuffles; without flips the same images look the same in every epoch.
    cli = fit(
        "--trainer.max_epochs=2",
        "--trainer.overfit_batches=3",
        "--trainer.callbacks+=tests.probes.EpochBatches",
        f"--data.loader={loader}",
        "--data.flip=false",
        config=DROPOUT,
    )
    first, second = callback(cli, EpochBatches).epochs
    assert len(first) == len(second) == 3
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_csv_logger_gets_the_metrics_and_hparams_and_figures_say_they_are_skipped(
    fit, caplog: pytest.LogCaptureFixture
) -> None:
    cli = fit(
        "--figures.enabled=true",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=5",
        "--trainer.limit_val_batches=2",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir=lightning_logs",
    )
    run_dir = Path(cli.trainer.log_dir)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/acc", "train/loss", "val/acc", "val/loss"} <= set(header)
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["optimizer"] == "torch.optim.sgd.SGD" and hparams["optimizer/lr"] == 0.01
    assert "figures: skipped, they need a TensorBoardLogger and this run logs with CSVLogger" in caplog.text


def test_hparams_record_the_optimizer_the_scheduler_max_epochs_and_the_seed(fit) -> None:
    cli = fit(
        "--figures.enabled=true",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--model.optimizer=torch.optim.AdamW",
        "--model.optimizer.lr=0.003",
        "--model.optimizer.weight_decay=0.05",
        "--model.scheduler=torch.optim.lr_scheduler.CosineAnnealingLR",
        "--model.scheduler.T_max=7",
        "--seed_everything=5",
    )
    run_dir = Path(cli.trainer.log_dir)
    saved = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    expected = {
        "optimizer": "torch.optim.adamw.AdamW",
        "optimizer/lr": 0.003,
        "optimizer/weight_decay": 0.05,
        "scheduler": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "scheduler/T_max": 7,
        "scheduler/interval": "epoch",
        "trainer/max_epochs": 1,
        "seed_everything": 5,
    }
    assert {key: saved[key] for key in expected} == expected
    (session,) = hparams_sessions(run_dir)
    assert session["optimizer/lr"].number_value == pytest.approx(0.003)
    assert session["scheduler"].string_value == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert session["seed_everything"].number_value == 5 and session["trainer/max_epochs"].number_value == 1


@pytest.mark.slow
def test_test_with_ckpt_path_best_in_a_new_process_takes_the_newest_runs_best(
    fit, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fit("--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2")
    cli = fit("--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2")
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    capsys.readouterr()
    tested = main(["test", "--config", SEED, *QUIET, "--ckpt_path", "best", "--trainer.limit_test_batches=2"])
    assert Path(tested.trainer.ckpt_path).resolve() == best.resolve()
    assert best.parent.parent.name == "version_1" and best.name.startswith("best-")
    assert (
        f"--ckpt_path best: loading {Path('lightning_logs/seed/version_1/checkpoints') / best.name}"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_a_profiler_given_is_used_and_none_given_profiles_nothing(fit, tmp_path: Path) -> None:
    options = ["--trainer.max_steps=3", "--trainer.limit_val_batches=1"]
    profiled = fit(
        *options,
        "--trainer.profiler=lightning.pytorch.profilers.SimpleProfiler",
        f"--trainer.profiler.dirpath={tmp_path}",
        "--trainer.profiler.filename=perf",
    )
    assert isinstance(profiled.trainer.profiler, SimpleProfiler)
    assert "[Strategy]SingleDeviceStrategy.training_step" in (tmp_path / "fit-perf.txt").read_text()
    assert type(fit(*options).trainer.profiler) is PassThroughProfiler  # Lightning's own default


def test_cheap_hook_bookkeeping_leaves_module_attributes_alone() -> None:
    module = FashionClassifier()
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and "_current_fx_name" in vars(module)
    module.extra = torch.nn.Linear(2, 2)  # still registered as a submodule, parameters and all
    assert "extra" in dict(module.named_children()) and "extra.weight" in module.state_dict()


def test_checkpointing_off_means_no_checkpoint_callbacks_at_all(fit, tmp_path: Path, capsys) -> None:
    cli = fit("--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.enable_checkpointing=false")
    assert cli.trainer.checkpoint_callbacks == []
    assert not any(isinstance(c, CheckpointOnSigterm) for c in cli.trainer.callbacks)
    assert not list(tmp_path.rglob("*.ckpt"))
    # So there is nothing to resume from, and --ckpt_path last says so in one line.
    capsys.readouterr()
    code, err = exit_of_main(["fit", "--config", SEED, "--ckpt_path=last"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no earlier run of this config has a last.ckpt" in err


def test_the_learning_rate_finder_finds_and_sets_the_optimizers_rate(fit, tmp_path: Path) -> None:
    cli = fit(
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.callbacks+=LearningRateFinder",
        "--trainer.callbacks.num_training_steps=20",
        "--trainer.callbacks.min_lr=1e-4",
        "--trainer.callbacks.max_lr=1.0",
    )
    (finder,) = [c for c in cli.trainer.callbacks if isinstance(c, LearningRateFinder)]
    found = finder.optimal_lr.suggestion()
    assert found is not None and found != 0.01  # seed.yaml's own rate
    assert cli.model.lr == pytest.approx(found)
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(found)
    logged = yaml.safe_load((Path(cli.trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert logged["optimizer/lr"] == pytest.approx(found)
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))  # the finder's own checkpoint is cleaned up


@pytest.mark.parametrize(
    ("option", "package"),
    [
        ("--trainer.callbacks+=RichProgressBar", "rich"),
        ("--trainer.logger=MLFlowLogger", "mlflow"),
    ],
)
def test_a_callback_or_logger_without_its_package_is_one_line_with_the_install_command(
    option: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["fit", "--config", SEED, option], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "pip install" in err and package in err
    assert not (tmp_path / "lightning_logs").exists()
