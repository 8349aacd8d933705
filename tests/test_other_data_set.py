"""Another data set of FashionMNIST's format is one descriptor and an option: MNIST-format files
generated here (the real MNIST and KMNIST cannot be downloaded on a machine without internet)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from fmnist_pl.show import main as show

from .helpers import QUIET, run_main, scalar_events, write_tiny_dataset

DESCRIPTOR = f"{__name__}.GENERATED"


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Generated MNIST-format files in a folder the descriptor names, the descriptor importable as
    ``DESCRIPTOR`` (as a user's own module would hold it); returns the data folder to train from."""
    monkeypatch.setattr(
        sys.modules[__name__], "GENERATED", write_tiny_dataset(tmp_path / "src", 400, 60), raising=False
    )
    return tmp_path / "data"


@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_fit_test_and_predict_read_the_descriptor(
    generated: Path, tmp_path: Path, loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = [f"--data.dataset={DESCRIPTOR}", f"--data.data_dir={generated}", f"--data.loader={loader}"]
    cli = run_main(
        ["fit", *QUIET, *data, "--data.val_size=100", "--trainer.max_epochs=1", "--data.flip=true"],
        tmp_path,
        monkeypatch,
    )
    assert (generated / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # torchvision's layout for MNIST
    run_dir = Path(cli.trainer.log_dir)
    assert "val/acc_per_class/digit 7" in scalar_events(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["dataset"] == DESCRIPTOR
    assert cli.datamodule.val_dataloader().normalization.mean == 0.5  # the descriptor's statistics

    test = run_main(["test", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), *QUIET], tmp_path, monkeypatch)
    report = (Path(test.trainer.log_dir) / "test_report.md").read_text()
    assert "digit 0" in report and "T-shirt" not in report
    assert sum(len(labels) for _, labels in test.datamodule.test_dataloader()) == 60

    predict = run_main(
        ["predict", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), *QUIET], tmp_path, monkeypatch
    )
    with open(Path(predict.trainer.log_dir) / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60 and {row["class"] for row in rows} <= {f"digit {digit}" for digit in range(10)}


def test_show_names_the_descriptors_classes(generated: Path, tmp_path: Path) -> None:
    out = show(
        ["--data.dataset", DESCRIPTOR, "--data.data_dir", str(generated), "--n", "8", "--out", str(tmp_path / "g.png")]
    )
    assert out.is_file()


def test_a_wrong_descriptor_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from .helpers import exit_of_main

    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["fit", "--data.dataset=fmnist_pl.data.sets.NOWHERE"], capsys)
    assert code == 2 and err.startswith(
        "error: --data.dataset fmnist_pl.data.sets.NOWHERE: no such data set descriptor"
    )
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "lightning_logs").exists()
