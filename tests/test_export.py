"""ONNX export: one self-contained file, normalization folded in, checked by onnxruntime."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import lightning
import pytest
import torch

from fmnist_pl.data.sets import FASHION_MNIST
from fmnist_pl.errors import UserError
from fmnist_pl.export import export_onnx
from fmnist_pl.model import FlipAveraged
from fmnist_pl.module import FashionClassifier
from fmnist_pl.trained import trained_network

from .helpers import exit_of_main, run_main

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install '.[export]' (CI installs it)")
onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install '.[export]'")


@pytest.fixture
def checkpoint(trained_checkpoint: Path) -> Path:
    return trained_checkpoint


def test_export_writes_one_checked_file_that_takes_raw_images(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_main(["export", f"--ckpt_path={checkpoint}", f"--output={tmp_path / 'model.onnx'}"], tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert "same class on 100.00%" in printed or "same class on 99.9" in printed
    # Both runtimes' test accuracy, each counted from its own logits against the labels.
    found = re.search(r"test accuracy (\d+\.\d+)% through onnxruntime \((\d+\.\d+)% in PyTorch\)", printed)
    assert found and abs(float(found[1]) - float(found[2])) <= 0.1 and 10 < float(found[1]) <= 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no .data file, no leftovers
    proto = onnx.load(str(tmp_path / "model.onnx"))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata["class_names"]) == list(FASHION_MNIST.names("en"))

    # Raw [0, 1] images in, the trained model's logits (normalization included) out, any batch size.
    model = trained_network(checkpoint)
    assert (model.mean.item(), model.std.item()) == pytest.approx((0.2860, 0.3530))  # the defaults, folded in
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        images = torch.rand(batch, 1, 28, 28)
        logits = session.run(["logits"], {"images": images.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(logits), model(images).detach(), rtol=1e-4, atol=1e-4)


def test_failed_check_is_an_error_and_writes_nothing(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_network(checkpoint)
    from fmnist_pl import export

    # A check that cannot pass (tolerance below zero) stands in for a real disagreement.
    monkeypatch.setattr(export, "MAX_LOGIT_DIFFERENCE", -1.0)
    with pytest.raises(UserError, match="export check failed"):
        export_onnx(model, tmp_path / "model.onnx", FASHION_MNIST.names("en"), torch.rand(20, 1, 28, 28))
    assert list(tmp_path.iterdir()) == []


def test_without_the_extra_export_names_it(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained_network(checkpoint)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"pip install '\.\[export\]'"):
        export_onnx(model, tmp_path / "model.onnx", FASHION_MNIST.names("en"), torch.rand(4, 1, 28, 28))


def test_missing_checkpoint_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["export", "--ckpt_path=nope.ckpt"], capsys)
    assert code == 2 and err.strip() == (
        "error: --ckpt_path nope.ckpt: no such file. Give the path of a .ckpt file from a run's checkpoints/ folder."
    )


def test_export_carries_the_averaged_weights_and_the_flip_averaging(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = FashionClassifier(tta_flip=True)
    averaged = FashionClassifier(tta_flip=True)
    with torch.no_grad():  # trained weights that differ from their average, as after training
        for parameter in module.net.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "ema.ckpt"
    data = {"normalize": True, "mean": 0.25, "std": 0.5}
    # What EMAWeightAveraging writes: the average in state_dict, the trained weights beside it.
    torch.save(
        {
            "state_dict": averaged.state_dict(),
            "current_model_state": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "datamodule_hyper_parameters": data,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    model = trained_network(path)
    images = torch.rand(16, 1, 28, 28)
    expected = averaged.eval()((images - 0.25) / 0.5)
    torch.testing.assert_close(model(images), expected)
    assert not torch.allclose(expected, module.eval()((images - 0.25) / 0.5))
    torch.testing.assert_close(expected, FlipAveraged(averaged.net)((images - 0.25) / 0.5))

    check = export_onnx(model, tmp_path / "model.onnx", FASHION_MNIST.names("en"), images)
    assert check["max_abs_diff"] < 1e-4 and check["agreement"] == 1.0
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(["logits"], {"images": images.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(scores), expected, rtol=1e-4, atol=1e-4)
