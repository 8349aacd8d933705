"""Distillation: the loss by hand, the teacher's cached logits, a teacher-free student checkpoint,
one-line errors for a bad teacher, and teacher then student end to end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.device_loader import DeviceLoader
from fmnist_pl.data.epochs import EpochSampler
from fmnist_pl.model import MLP
from fmnist_pl.pixels import Normalization
from fmnist_pl.techniques.distillation import Distillation, distillation_loss
from fmnist_pl.trained import trained_network

from .helpers import REPO, SMALL_RUN, exit_of_main, run_main, save_classifier_checkpoint

BEST = str(REPO / "configs" / "best.yaml")


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_the_distillation_loss_is_the_formula_by_hand(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 10, generator=generator), torch.randn(6, 10, generator=generator) * 3
    labels = torch.arange(6) % 10
    p_teacher = torch.exp(teacher / temperature) / torch.exp(teacher / temperature).sum(1, keepdim=True)
    p_student = torch.exp(student / temperature) / torch.exp(student / temperature).sum(1, keepdim=True)
    by_hand = (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean() * temperature**2
    torch.testing.assert_close(distillation_loss(student, teacher, temperature), by_hand)
    label_loss = F.cross_entropy(student, labels)
    combined = Distillation("unused.ckpt", temperature, weight=0.7).loss(label_loss, student, teacher)
    torch.testing.assert_close(combined, 0.3 * label_loss + 0.7 * by_hand)


@pytest.mark.parametrize(("flip", "mirror_invariant"), [(False, False), (True, False), (True, True)])
def test_cached_teacher_scores_equal_the_teachers_output_on_the_batch(flip: bool, mirror_invariant: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=generator)
    weights = torch.randn(28 * 28, 10, generator=generator)

    def teacher(raw: torch.Tensor) -> torch.Tensor:  # raw [0, 1] images (N, 1, 28, 28) -> logits
        if mirror_invariant:  # like a tta_flip teacher: the same scores for an image and its mirror
            return (raw.flatten(1) @ weights + raw.flip(-1).flatten(1) @ weights) / 2
        return raw.flatten(1) @ weights

    def scores_of_pixels(batch: torch.Tensor) -> torch.Tensor:
        return teacher(batch.unsqueeze(1).float() / 255)

    table = (scores_of_pixels(pixels), scores_of_pixels(pixels.flip(-1)) if flip and not mirror_invariant else None)
    order = EpochSampler(300, shuffle=True, seed=0)
    augmentations = Augmentations.of(flip=flip)
    loader = DeviceLoader(pixels, torch.arange(300), order, 64, augmentations=augmentations, teacher_scores=table)
    flipped = 0
    for images, indices, scores in loader:
        torch.testing.assert_close(scores, teacher(images))
        flipped += int((~torch.isclose(scores, table[0][indices]).all(1)).sum())
    assert (100 < flipped < 200) if flip and not mirror_invariant else flipped == 0


def test_the_same_teacher_file_scoring_the_same_images_again_is_remembered(tmp_path: Path) -> None:
    checkpoint = tmp_path / "teacher.ckpt"
    checkpoint.write_bytes(b"stands for the weights: the network below is what read() returns")
    network = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    scored: list[int] = []  # the batch size of each of the teacher's forward passes while scoring
    network.register_forward_hook(lambda module, inputs, output: scored.append(len(output)))

    def score(pixels: torch.Tensor) -> tuple[torch.Tensor, bool, list[int]]:
        """Scores as a fit of a sweep does: a fresh Distillation; returns what it ran."""
        distillation = Distillation(str(checkpoint), temperature=4.0, weight=0.9)
        distillation.load(lambda path, option: network, torch.device("cpu"), 10, Normalization())
        scored.clear()  # load() probes the output width with one image
        scores = distillation.scores_of_pixels(pixels)
        return scores, distillation.reused_scores, list(scored)

    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (3000, 28, 28), dtype=torch.uint8, generator=generator)
    first, reused, passes = score(pixels)
    assert (reused, passes) == (False, [2048, 952])

    again, reused, passes = score(pixels.clone())
    assert (reused, passes) == (True, [])
    torch.testing.assert_close(again, first, rtol=0, atol=0)

    other = pixels.clone()
    other[0, 0, 0] ^= 1  # one pixel's lowest bit
    assert score(other)[1:] == (False, [2048, 952])

    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the teacher retrained
    assert score(pixels)[1:] == (False, [2048, 952])


@pytest.mark.slow
def test_teacher_then_student_and_the_student_needs_no_teacher_afterwards(
    tmp_path: Path,
    teacher_run: Path,
    real_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    teacher_copy = tmp_path / "teacher"
    shutil.copytree(teacher_run, teacher_copy)
    best_ckpt = next((teacher_copy / "version_0" / "checkpoints").glob("best-*.ckpt"))
    capsys.readouterr()
    run_main(
        ["fit", "--config", BEST, *SMALL_RUN, f"--data.data_dir={real_data_dir}", f"--model.teacher={teacher_copy}"],
        tmp_path,
        monkeypatch,
    )
    assert f"distilling from {best_ckpt} (its logits for the training images computed once)" in caplog.text
    student_ckpt = tmp_path / "lightning_logs" / "best" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(student_ckpt, weights_only=True)
    assert {key.split(".")[0] for key in checkpoint["state_dict"]} == {"net", "val_acc_best"}
    assert checkpoint["state_dict"]["net.layers.1.weight"].shape == (256, 784)  # the MLP, not the CNN
    # The command line resolved the run name's folder: the run records the very file that taught it.
    assert checkpoint["hyper_parameters"]["teacher"] == str(best_ckpt)
    saved_config = yaml.safe_load((student_ckpt.parents[1] / "config.yaml").read_text())
    assert saved_config["model"]["teacher"] == str(best_ckpt)

    shutil.rmtree(teacher_copy)
    run_main(["test", f"--ckpt_path={student_ckpt}", "--trainer.enable_progress_bar=false"], tmp_path, monkeypatch)
    assert "test/acc" in capsys.readouterr().out
    run_main(["export", f"--ckpt_path={student_ckpt}", f"--output={tmp_path / 'student.onnx'}"], tmp_path, monkeypatch)
    assert (tmp_path / "student.onnx").stat().st_size > 100_000
    student = trained_network(student_ckpt)
    assert student(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_an_augmented_or_mixed_batch_is_scored_by_the_teacher_itself(
    tmp_path: Path,
    teacher_run: Path,
    real_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Shifts: the data module cannot cache (the torchvision path takes the same branch); mixup: the module does not ask.
    for extra in (["--data.shift=2"], ["--model.mixup_alpha=0.2"]):
        run_main(
            [
                "fit",
                "--config",
                BEST,
                *SMALL_RUN,
                f"--data.data_dir={real_data_dir}",
                f"--model.teacher={teacher_run}",
                *extra,
            ],
            tmp_path,
            monkeypatch,
        )
        assert "(scoring each batch)" in caplog.text, extra
        caplog.clear()


def _other_projects_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"0.weight": torch.zeros(2, 2)}}, path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing.ckpt", "--model.teacher {}: no such file."),
        (
            lambda tmp: _other_projects_checkpoint(tmp / "other.ckpt"),
            "--model.teacher {}: not a checkpoint of this project's model",
        ),
        (lambda tmp: tmp, "--model.teacher {}: no run in this folder has a best-*.ckpt; train the teacher first"),
    ],
    ids=["missing", "another-project", "no-run"],
)
def test_a_bad_teacher_is_a_one_line_error(
    make,
    expected: str,
    tmp_path: Path,
    real_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    teacher = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(
        ["fit", "--config", BEST, *SMALL_RUN, f"--data.data_dir={real_data_dir}", f"--model.teacher={teacher}"], capsys
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: " + expected.format(teacher)), err[-1500:]
    assert not list(tmp_path.glob("lightning_logs/best/*/checkpoints/*.ckpt"))


def test_a_teacher_of_other_classes_is_a_one_line_error(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = save_classifier_checkpoint(tmp_path / "five.ckpt", MLP, hidden_sizes=[8], num_classes=5)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(
        ["fit", "--config", BEST, *SMALL_RUN, f"--data.data_dir={real_data_dir}", f"--model.teacher={path}"], capsys
    )
    assert code == 2
    assert (
        err.strip().splitlines()[-1]
        == f"error: --model.teacher {path}: the teacher scores 5 classes; the student has 10."
    )
