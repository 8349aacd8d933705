"""Checkpoint safety: a file that carries code is refused everywhere before any of it runs; damaged
files are one-line errors; the project's own checkpoints load as plain data; saves are atomic."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmnist_pl.checkpoints import SafeCheckpointIO, load_checkpoint
from fmnist_pl.cli import FashionCLI, main
from fmnist_pl.errors import CheckpointError
from fmnist_pl.module import FashionClassifier

from .helpers import REPO, SMALL_RUN, exit_of_main


class RunsCodeWhenLoaded:
    """Unpickling this writes ``marker``: any code at all could run there instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code from the checkpoint ran"))


@pytest.fixture
def booby_trapped(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint-shaped file that runs code when unpickled, and the marker that code would write."""
    marker, path = tmp_path / "marker", tmp_path / "trap.ckpt"
    model = FashionClassifier()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"payload": RunsCodeWhenLoaded(marker)}}, path)
    # The trap is real: an unsafe load does run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code from the checkpoint ran"
    marker.unlink()
    return path, marker


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict", "export"])
def test_every_command_refuses_a_checkpoint_that_carries_code(
    command: str,
    booby_trapped: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    path, marker = booby_trapped
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main([command, f"--ckpt_path={path}"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: --ckpt_path {path}: refused, it holds objects that are not plain data")
    assert not marker.exists()


def test_load_from_checkpoint_and_the_trainers_own_loading_refuse_it_too(
    booby_trapped: tuple[Path, Path], tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = booby_trapped
    with pytest.raises(CheckpointError, match="refused"):
        FashionClassifier.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        FashionClassifier.load_from_checkpoint(path, weights_only=False)
    # Past the CLI's own check: the Trainer reads through SafeCheckpointIO.
    monkeypatch.chdir(tmp_path)
    cli = FashionCLI(args=[*SMALL_RUN, f"--data.data_dir={real_data_dir}"], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)
    with pytest.raises(CheckpointError, match="refused"):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=path)
    assert not marker.exists()


def write_damaged(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"state_dict": FashionClassifier().state_dict()}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    else:  # a valid torch file, but not a Lightning checkpoint
        torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("empty", "the file is empty"),
        ("truncated", "not a readable checkpoint"),
        ("text", "not a readable checkpoint"),
        ("no_state_dict", "not a Lightning checkpoint"),
    ],
)
def test_damaged_checkpoints_are_one_line_errors(
    kind: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = write_damaged(kind, tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["test", f"--ckpt_path={path}"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: --ckpt_path {path}: {says}")


def test_truncated_checkpoint_given_to_fit_and_the_traceback_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = write_damaged("truncated", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["fit", f"--ckpt_path={path}"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: --ckpt_path {path}: not a readable checkpoint")
    monkeypatch.setenv("FMNIST_DEBUG", "1")
    with pytest.raises(CheckpointError):
        main(["test", f"--ckpt_path={path}"])


def test_the_projects_own_checkpoints_load_as_plain_data(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything that adds state: AdamW, a scheduler that reads val/loss, the figures callback.
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            *SMALL_RUN,
            f"--data.data_dir={real_data_dir}",
            "--model.optimizer=torch.optim.AdamW",
            "--model.scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau",
            "--model.scheduler.patience=0",
        ]
    )
    paths = sorted((tmp_path / "lightning_logs" / "default" / "version_0" / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    for path in paths:
        checkpoint = torch.load(path, weights_only=True)
        assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks"} <= set(checkpoint)
        assert checkpoint["callbacks"]["RestoreRNGState"]["torch"].dtype == torch.uint8
        assert "val_acc_best.max_value" in checkpoint["state_dict"]
        FashionClassifier.load_from_checkpoint(path)


KILLED_WHILE_SAVING = """
import io, os, signal, sys, torch
from fmnist_pl.checkpoints import SafeCheckpointIO

path = sys.argv[1]
SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, path)
real_save = torch.save

def die_halfway(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    with open(f, "wb") as out:
        out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        out.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = die_halfway
SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "epoch": 1}, path)
"""


@pytest.mark.slow
def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SAVING, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 0 and torch.equal(checkpoint["state_dict"]["w"], torch.zeros(1000))
    # The half-written file has a temporary name that nothing takes for a checkpoint.
    (partial,) = [p for p in path.parent.iterdir() if p != path]
    assert partial.name.startswith(".last.ckpt.") and partial.name.endswith(".partial")
