"""Shared fixtures: small IDX files the tests write, the real FashionMNIST files, and a small trainer."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from fmnist_pl.data.files import (
    DEBIAN_DIR,
    ENV_VAR,
    FASHION_MNIST_FILES,
    IdxFile,
    ensure_files,
    raw_dir,
)

REPO = Path(__file__).resolve().parents[1]

# Arguments that shrink a run to a second or two on the CPU: 2 epochs of 8 batches, no progress bar.
SMALL_RUN = [
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=8",
    "--trainer.limit_val_batches=4",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def idx_bytes(array: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file (big-endian header, then the raw bytes)."""
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.contiguous().numpy().tobytes()


def write_tiny_dataset(
    folder: Path, train_size: int = 120, test_size: int = 40, gz: bool = True
) -> tuple[IdxFile, ...]:
    """Write four small IDX files named like FashionMNIST's; return their specs with real MD5s."""
    generator = torch.Generator().manual_seed(0)
    arrays = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (train_size, 28, 28), dtype=torch.uint8, generator=generator),
        "train-labels-idx1-ubyte": torch.arange(train_size, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (test_size, 28, 28), dtype=torch.uint8, generator=generator),
        "t10k-labels-idx1-ubyte": torch.arange(test_size, dtype=torch.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
        specs.append(IdxFile(name, hashlib.md5(data).hexdigest()))
    return tuple(specs)


def real_source_dir() -> Path | None:
    """A folder holding the real FashionMNIST files, if this machine has one."""
    for folder in (os.environ.get(ENV_VAR), str(DEBIAN_DIR)):
        if folder and all(
            (Path(folder) / f"{f.name}.gz").is_file() or (Path(folder) / f.name).is_file() for f in FASHION_MNIST_FILES
        ):
            return Path(folder)
    return None


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with the real, verified FashionMNIST files, extracted once per test session."""
    source = real_source_dir()
    if source is None:
        pytest.skip(f"real FashionMNIST not on this machine: apt-get install dataset-fashion-mnist or set ${ENV_VAR}")
    data_dir = tmp_path_factory.mktemp("fmnist")
    ensure_files(data_dir, [source], download=False)
    assert sorted(p.name for p in raw_dir(data_dir).iterdir()) == sorted(f.name for f in FASHION_MNIST_FILES)
    return data_dir


def run_cli(args: Sequence[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m fmnist_pl ARGS`` as a real subprocess in ``cwd``; fail after ``timeout`` seconds.

    Only for what a subprocess alone shows: a real exit status, a kill, several DDP processes.
    Everything else goes through :func:`run_main` (starting Python, torch and Lightning costs ~6 s).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("FMNIST_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_pl", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
    return result


def exit_of_main(args: Sequence[str], capsys: pytest.CaptureFixture) -> tuple[int | str | None, str]:
    """Run the command in-process through its entry point (``python -m fmnist_pl`` calls ``main``),
    expecting it to exit; return its exit status and what it wrote to stderr.

    For the error cases, where a subprocess would only add the 10 s of importing torch and Lightning.
    """
    from fmnist_pl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def run_main(args: Sequence[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the command in-process through its entry point (``python -m fmnist_pl`` calls ``main``) in ``cwd``."""
    from fmnist_pl.cli import main

    monkeypatch.chdir(cwd)
    return main(list(args))


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """``last.ckpt`` of one small fit (dropout 0.2, otherwise the defaults), shared by the tests that
    only need a trained checkpoint (predict, export); they add at most a ``predict/`` folder to its run."""
    from fmnist_pl.cli import main

    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["fit", *SMALL_RUN, f"--data.data_dir={real_data_dir}", "--model.dropout=0.2", "--figures.enabled=false"])
    return folder / "lightning_logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """A teacher from teacher.yaml fitted on a few batches, returns its run name's folder. A small MLP
    rather than the CNN: scoring the 55,000 training images with the CNN takes about a minute on the
    CPU, and the CNN itself is tested in test_cli's run of every config."""
    from fmnist_pl.cli import main

    folder = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "teacher.yaml"),
                *SMALL_RUN,
                f"--data.data_dir={real_data_dir}",
                "--model.network=mlp",
                "--model.hidden_sizes=[32]",
                "--figures.enabled=false",
            ]
        )
    return folder / "lightning_logs" / "teacher"
