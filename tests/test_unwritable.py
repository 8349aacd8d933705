"""Folders that cannot be written are one line naming the place and the cause, exit 2, and nothing
written before is lost. (As root, permission bits do not stop writes, so the tests use a path below a
regular file, which no user can create, and a simulated full disk.)"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from fmnist_pl import checkpoints

from .helpers import REPO, SMALL_RUN, exit_of_main

SEED = str(REPO / "configs" / "seed.yaml")


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A folder path that cannot be created: it lies below a regular file."""
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "logs"


def test_a_log_folder_that_cannot_be_created_stops_before_training(
    blocked: Path, real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(
        [
            "fit",
            "--config",
            SEED,
            *SMALL_RUN,
            f"--data.data_dir={real_data_dir}",
            f"--trainer.logger.init_args.save_dir={blocked}",
        ],
        capsys,
    )
    (line,) = err.strip().splitlines()[-1:]
    assert code == 2 and "Traceback" not in err
    assert line.startswith(f"error: cannot write {blocked}/seed/version_0: ") and "NotADirectoryError" in line


@pytest.mark.parametrize("option", ["--output", "--predictions.output"])
def test_an_output_file_that_cannot_be_written_is_one_line(
    option: str,
    blocked: Path,
    trained_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    command = "export" if option == "--output" else "predict"
    extra = ["--trainer.enable_progress_bar=false", "--trainer.limit_predict_batches=1"] if command == "predict" else []
    code, err = exit_of_main(
        [command, f"--ckpt_path={trained_checkpoint}", f"{option}={blocked / 'out.file'}", *extra], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot write {blocked / 'out.file'}: ")


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    saves = []
    real_save = torch.save

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) > 2:  # epoch 0's best and last went through; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save_until_the_disk_is_full)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["fit", "--config", SEED, *SMALL_RUN, f"--data.data_dir={real_data_dir}"], capsys)
    last = tmp_path / "lightning_logs" / "seed" / "version_0" / "checkpoints" / "last.ckpt"
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: cannot write ") and "No space left on device" in line, line
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the previous checkpoint, whole
    assert not list(last.parent.glob(".*.partial"))
