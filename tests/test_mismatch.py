"""A checkpoint that does not fit the model is one line naming the file and the mismatch, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.model import CNN, MLP
from fmnist_pl.module import FashionClassifier
from fmnist_pl.trained import trained_network

from .helpers import QUIET, REPO, exit_of_main, run_main, save_classifier_checkpoint

SEED = str(REPO / "configs" / "seed.yaml")


@pytest.fixture
def small_net_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of this project's model, trained with --model.net.hidden_sizes [64]."""
    return save_classifier_checkpoint(tmp_path / "small.ckpt", MLP, hidden_sizes=[64])


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_other_hidden_sizes_are_one_line_for_every_subcommand(
    subcommand: str,
    small_net_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main([subcommand, "--config", SEED, f"--ckpt_path={small_net_checkpoint}"], capsys)
    assert code == 2
    assert err.strip() == (
        f"error: --ckpt_path {small_net_checkpoint}: net.layers.1.bias is [64] in the checkpoint and [256] in the "
        "config's network. Give the checkpoint's own settings (or no --config), or another checkpoint."
    )
    assert not (tmp_path / "lightning_logs").exists()


def test_another_network_class_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = save_classifier_checkpoint(tmp_path / "cnn.ckpt", CNN, channels=[4, 8])
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["test", "--config", SEED, f"--ckpt_path={path}"], capsys)
    assert code == 2
    assert err.strip().startswith(
        f"error: --ckpt_path {path}: the checkpoint holds a fmnist_pl.model.CNN; "
        "the config builds a fmnist_pl.model.MLP."
    ), err


def test_without_a_config_the_checkpoint_rebuilds_its_own_network(
    small_net_checkpoint: Path, real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["validate", f"--ckpt_path={small_net_checkpoint}", f"--data.data_dir={real_data_dir}", *QUIET]
    cli = run_main([*args, "--trainer.limit_val_batches=1"], tmp_path, monkeypatch)
    assert isinstance(cli.model.net, MLP) and cli.model.net.layers[1].out_features == 64


def test_a_checkpoint_from_before_the_net_option_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The format written before the network was injected: its settings flat in the model's hparams.
    path = tmp_path / "old.ckpt"
    module = FashionClassifier()
    old_hparams = {"network": "mlp", "hidden_sizes": [256, 128], "dropout": 0.2, "input_size": 784, "num_classes": 10}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": old_hparams}, path)
    monkeypatch.chdir(tmp_path)
    for args in (["test", f"--ckpt_path={path}"], ["export", f"--ckpt_path={path}"]):
        code, err = exit_of_main(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "predates the network option --model.net" in err, err


def test_a_checkpoint_of_another_model_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(2704, 10))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": {"lr": 0.1}}, path)
    monkeypatch.chdir(tmp_path)
    for args in (["test", f"--ckpt_path={path}"], ["export", f"--ckpt_path={path}"]):
        code, err = exit_of_main(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: --ckpt_path {path}: not a checkpoint of this project's model"), err


def test_export_rebuilds_the_checkpoints_own_network(small_net_checkpoint: Path) -> None:
    # export builds the model from the checkpoint itself, so a [64] network exports as such.
    model = trained_network(small_net_checkpoint)
    assert model.net.layers[1].out_features == 64
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
