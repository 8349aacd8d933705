"""The command line end to end, on the real data, as a real subprocess where the exit matters."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from fmnist_pl.cli import main

from .helpers import REPO, SMALL_RUN, accuracy_on_test_split, exit_of_main, run_cli, run_main, scalars

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TRAIN_VAL_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"}


def fit(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Path:
    """A small fit in ``tmp_path``, in-process; return its run folder."""
    run_main(["fit", *SMALL_RUN, f"--data.data_dir={data_dir}", *extra], tmp_path, monkeypatch)
    runs = sorted((tmp_path / "lightning_logs" / "default").iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


@pytest.mark.slow
def test_fit_writes_one_run_folder_then_test_and_validate_need_no_config(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_dir = fit(tmp_path, real_data_dir, monkeypatch, "--data.normalize=false", "--data.batch_size=32")
    assert run_dir == tmp_path / "lightning_logs" / "default" / "version_0"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints[-1] == "last.ckpt" and checkpoints[0].startswith("best-epoch")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"] == 32
    logged = scalars(run_dir)
    assert TRAIN_VAL_TAGS <= set(logged)
    assert len(logged["train/loss"]) == 2 and len(logged["val/acc"]) == 2  # once per epoch, not per step
    assert "hp_metric" not in logged

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    run_main(["test", f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false"], tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert "test/acc" in printed and "test/loss" in printed
    test_dir = run_dir / "test-last"  # the run's own folder, named by the checkpoint it evaluates
    # The eval transforms came from the checkpoint (no normalization), the batch size too.
    test_config = yaml.safe_load((test_dir / "config.yaml").read_text())
    assert test_config["data"]["normalize"] is False and test_config["data"]["batch_size"] == 32
    test_scalars = scalars(test_dir)
    assert {"test/acc", "test/loss"} <= set(test_scalars)
    # The logged accuracy is the checkpoint's on the 10,000 test images, scored here independently.
    assert test_scalars["test/acc"][0] == pytest.approx(accuracy_on_test_split(ckpt, real_data_dir), abs=1e-6)

    # An option given on the command line wins over the checkpoint's value.
    run_main(
        ["validate", f"--ckpt_path={ckpt}", "--data.batch_size=500", "--trainer.enable_progress_bar=false"],
        tmp_path,
        monkeypatch,
    )
    validate_config = yaml.safe_load((run_dir / "validate-last" / "config.yaml").read_text())
    assert validate_config["data"]["batch_size"] == 500 and validate_config["data"]["normalize"] is False
    assert {"val/acc", "val/loss"} <= set(scalars(run_dir / "validate-last"))

    # A second run gets its own folder instead of failing on the existing config.yaml.
    second = fit(tmp_path, real_data_dir, monkeypatch, "--trainer.max_epochs=1")
    assert second.name == "version_1" and (second / "config.yaml").is_file()


def test_last_ckpt_holds_the_final_epoch_even_when_val_acc_stops_improving(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With lr 0 the weights never change, so val/acc never improves after the first epoch.
    run_dir = fit(
        tmp_path,
        real_data_dir,
        monkeypatch,
        "--trainer.max_epochs=3",
        "--model.optimizer=torch.optim.SGD",
        "--model.optimizer.lr=0",
        "--figures.enabled=false",
    )
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (best_path,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    best = torch.load(best_path, weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] == 0


@pytest.mark.slow
def test_best_and_last_after_fit_in_the_same_process(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *SMALL_RUN, f"--data.data_dir={real_data_dir}"])
    best = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    best_path = cli.trainer.checkpoint_callback.best_model_path
    assert cli.trainer.ckpt_path == best_path
    last = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)
    assert Path(cli.trainer.ckpt_path).name == "last.ckpt"
    # Each scored its own weights.
    assert best[0]["test/acc"] == pytest.approx(accuracy_on_test_split(Path(best_path), real_data_dir), abs=1e-6)
    assert last[0]["test/acc"] == pytest.approx(
        accuracy_on_test_split(Path(cli.trainer.ckpt_path), real_data_dir), abs=1e-6
    )


def test_scheduler_steps_once_per_epoch(tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            "fit",
            *SMALL_RUN,
            f"--data.data_dir={real_data_dir}",
            "--model.scheduler=torch.optim.lr_scheduler.StepLR",
            "--model.scheduler.step_size=1",
            "--model.scheduler.gamma=0.5",
        ]
    )
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**2)


@pytest.mark.slow
def test_same_config_twice_gives_the_same_metrics(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs" / "dropout.yaml"), *SMALL_RUN, f"--data.data_dir={real_data_dir}"]
    first = {k: v.item() for k, v in main(args).trainer.callback_metrics.items()}
    second = {k: v.item() for k, v in main(args).trainer.callback_metrics.items()}
    assert first == second and set(first) >= TRAIN_VAL_TAGS


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_trains_briefly(
    config: Path, tmp_path: Path, real_data_dir: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = yaml.safe_load(config.read_text())
    assert isinstance(settings["seed_everything"], int)
    # A config that distils gets a briefly trained teacher in its teacher's place.
    teacher = [f"--model.teacher={request.getfixturevalue('teacher_run')}"] if settings["model"].get("teacher") else []
    cli = main(["fit", "--config", str(config), *SMALL_RUN, f"--data.data_dir={real_data_dir}", *teacher])
    assert Path(cli.trainer.log_dir).resolve() == tmp_path / "lightning_logs" / config.stem / "version_0"
    assert cli.trainer.current_epoch == 2 and TRAIN_VAL_TAGS <= set(cli.trainer.callback_metrics)


def test_print_config_shows_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_main(["fit", "--print_config"], tmp_path, monkeypatch)
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["class_path"] == "fmnist_pl.model.MLP"
    assert printed["model"]["net"]["init_args"]["hidden_sizes"] == [256, 128] and printed["data"]["val_size"] == 5000
    assert printed["trainer"]["accelerator"] == "auto"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--model.net.dropout=1.5"], "--model.net.dropout must be in [0.0, 1.0), got 1.5"),
        (["fit", "--data.batch_size=0"], "--data.batch_size must be at least 1, got 0"),
        (["fit", "--figures.every_n_epochs=0"], "--figures.every_n_epochs must be at least 1, got 0"),
        (["fit", "--data.val_size=60000"], "--data.val_size must be in [0, 60000), got 60000"),
        (["fit", "--model.label_smoothing=-0.1"], "--model.label_smoothing must be in [0.0, 1.0), got -0.1"),
        (
            ["test", "--ckpt_path=missing.ckpt"],
            "--ckpt_path missing.ckpt: no such file. Give the path of a .ckpt file from a run's checkpoints/ folder.",
        ),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(args, capsys)
    assert code == 2 and err.strip() == f"error: {expected}"
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_a_bad_value_from_the_real_command(tmp_path: Path) -> None:
    result = run_cli(["fit", "--model.net.dropout=1.5"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --model.net.dropout must be in [0.0, 1.0), got 1.5"


@pytest.mark.parametrize(
    ("args", "named"),
    [(["fit", "--model.no_such_option=1"], "no_such_option"), (["fit", "--data.batch_size=many"], "batch_size")],
)
def test_unknown_options_and_wrong_types_are_the_clis_errors(
    tmp_path: Path, args: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(args, capsys)
    assert code not in (0, None) and named in err and "Traceback" not in err


@pytest.mark.slow
def test_fits_started_at_once_each_get_a_folder_of_their_own(tmp_path: Path, real_data_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fmnist_pl",
        "fit",
        "--config",
        str(REPO / "configs" / "seed.yaml"),
        *SMALL_RUN,
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.max_epochs=1",
        "--figures.enabled=false",
        f"--data.data_dir={real_data_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    fits = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [fit.wait(timeout=300) for fit in fits] == [0, 0], [fit.stderr.read()[-500:] for fit in fits]
    runs = sorted((tmp_path / "lightning_logs" / "seed").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:
        assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] is None
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one run's events, not two
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # An abbreviation of a real option is refused (argparse would take it for --trainer.max_epochs).
        (["fit", "--trainer.max_epoch=3"], "unknown option --trainer.max_epoch; did you mean --trainer.max_epochs?"),
        (
            ["fit", "--model.net.hiden_sizes=[3]"],
            "unknown option --model.net.hiden_sizes; did you mean --model.net.hidden_sizes?",
        ),
        (["test", "--data.batchsize=3"], "unknown option --data.batchsize; did you mean --data.batch_size?"),
    ],
)
def test_a_misspelt_option_is_one_line_with_the_closest_real_one(
    tmp_path: Path, args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {expected} (`python -m fmnist_pl {args[0]} --help` lists them all)")
    assert not (tmp_path / "lightning_logs").exists()


def test_a_missing_config_lists_the_configs_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(REPO)
    code, err = exit_of_main(["fit", "--config", "configs/nope.yaml"], capsys)
    listed = ", ".join(f"configs/{path.name}" for path in CONFIGS)
    assert code == 2 and err.strip() == f"error: --config configs/nope.yaml: no such file; the configs here: {listed}"


@pytest.mark.slow
def test_a_fit_ends_naming_its_run_and_the_next_commands(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_dir = fit(tmp_path, real_data_dir, monkeypatch, "--figures.enabled=false", "--trainer.max_epochs=1")
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    relative = run_dir.relative_to(tmp_path)
    checkpoints = relative / "checkpoints"
    assert capsys.readouterr().err.strip().splitlines()[-4:] == [
        f"run folder: {relative}",
        f"evaluate it: python -m fmnist_pl test --ckpt_path {checkpoints / 'last.ckpt'}",
        f"  (the last epoch; the best by val/acc: --ckpt_path {checkpoints / best.name})",
        f"its curves:  tensorboard --logdir {relative.parent}",
    ]
    # The README's results are of the same checkpoint, the end of the last epoch.
    results = (REPO / "README.md").read_text(encoding="utf-8").split("## Results")[1].split("## Using it")[0]
    assert "/checkpoints/last.ckpt" in results and "best-" not in results


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_changes_nothing(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    small = [*SMALL_RUN, f"--data.data_dir={real_data_dir}", "--figures.enabled=false"]
    run_dir = fit(tmp_path, real_data_dir, monkeypatch, "--figures.enabled=false")
    before = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    capsys.readouterr()
    code, err = exit_of_main(["fit", *small, "--ckpt_path=last"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "that run is complete, it reached max_epochs=2 (it trained 2 epochs); nothing to resume" in err
    assert "a larger --trainer.max_epochs" in err
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == before
    # Asked for more epochs, the same run goes on in its own folder.
    capsys.readouterr()
    run_main(["fit", *small, "--trainer.max_epochs=3", "--ckpt_path=last"], tmp_path, monkeypatch)
    assert len(scalars(run_dir)["val/acc"]) == 3


@pytest.mark.slow
def test_every_command_spells_the_data_folder_alike(
    trained_checkpoint: Path, real_data_dir: Path, tmp_path: Path
) -> None:
    from fmnist_pl.export import main as export
    from fmnist_pl.show import main as show

    option = f"--data.data_dir={real_data_dir}"
    assert show(["--out", str(tmp_path / "grid.png"), "--n", "4", option]).is_file()
    assert export([f"--ckpt_path={trained_checkpoint}", f"--output={tmp_path / 'm.onnx'}", option]).is_file()


def test_a_command_prints_nothing_a_user_cannot_act_on(
    trained_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
) -> None:
    # Every warning shown, as Python shows them by default outside pytest; every log record kept.
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        run_main(["test", f"--ckpt_path={trained_checkpoint}", "--trainer.limit_test_batches=2"], tmp_path, monkeypatch)
    shown = [str(warning.message) for warning in caught] + [record.getMessage() for record in caplog.records]
    assert any("Seed set to" in line for line in shown)  # what Lightning says that a user can act on stays
    for unactionable in ("LeafSpec", "litlogger", "No seed found", "The dirpath has changed"):
        assert not [line for line in shown if unactionable in line], unactionable
    assert "test/acc" in capsys.readouterr().out


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_an_evaluation_without_a_checkpoint_is_refused_unless_asked_for_an_untrained_network(
    tmp_path: Path, subcommand: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main([subcommand, "--config", str(REPO / "configs" / "seed.yaml")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {subcommand}: no --ckpt_path, so it would score an untrained network")
    assert "--ckpt_path untrained" in err
    assert not (tmp_path / "lightning_logs").exists()


def test_an_untrained_network_is_tested_when_asked_for_by_name(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = run_main(
        [
            "test",
            "--ckpt_path=untrained",
            *SMALL_RUN,
            "--trainer.limit_test_batches=2",
            f"--data.data_dir={real_data_dir}",
        ],
        tmp_path,
        monkeypatch,
    )
    assert cli.config.test.ckpt_path is None
    assert 0.0 <= float(cli.trainer.callback_metrics["test/acc"]) <= 1.0


def test_an_option_before_the_subcommand_is_named_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(REPO)
    code, err = exit_of_main(["--config", "configs/dropout.yaml", "fit", "--trainer.max_epochs=1"], capsys)
    assert code == 2 and err.strip() == (
        "error: --config comes before the subcommand fit: options, --config included, go after it, "
        "as in `python -m fmnist_pl fit --config configs/dropout.yaml --trainer.max_epochs=1`"
    )


def test_a_missing_or_unknown_command_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    every = "fit, validate, test, predict, show, export, sweep, serve"
    code, err = exit_of_main([], capsys)
    assert code == 2 and err == f"error: give a command: {every} (`python -m fmnist_pl --help` says what each does)\n"
    code, err = exit_of_main(["exprot", "--ckpt_path=x.ckpt"], capsys)
    assert code == 2 and err == (
        "error: unknown command 'exprot'; did you mean export? "
        f"the commands are {every} (`python -m fmnist_pl --help`)\n"
    )
