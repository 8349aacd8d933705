"""A checkpoint that does not fit the model is one line naming the file and the mismatch, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.module import FashionClassifier

from .conftest import REPO, exit_of_main

SEED = str(REPO / "configs" / "seed.yaml")


@pytest.fixture
def small_net_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of this project's model, trained with --model.hidden_sizes [64]."""
    module = FashionClassifier(hidden_sizes=[64])
    path = tmp_path / "small.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


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
        f"error: --ckpt_path {small_net_checkpoint}: the checkpoint has hidden_sizes [64]; "
        "the config asks for [256, 128]. Give the checkpoint's own settings (or no --config), or another checkpoint."
    )


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


def test_export_names_the_mismatch_too(small_net_checkpoint: Path, tmp_path: Path) -> None:
    # export builds the model from the checkpoint itself, so a [64] network exports as such.
    from fmnist_pl.export import load_raw_image_classifier

    model, _ = load_raw_image_classifier(small_net_checkpoint)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
