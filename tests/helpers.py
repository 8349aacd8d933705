"""Helpers shared by the tests: the real command line in-process or as a subprocess, small runs,
tiny IDX files, checkpoints written by hand, and reading back what a run wrote."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from fmnist_pl.data.sets import FASHION_MNIST, DataSet, idx_files

REPO = Path(__file__).resolve().parents[1]

# A run on the CPU that prints only what a test reads: no progress bar, no model summary.
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# The same, shrunk to a second or two: 2 epochs of 8 batches, validation on 4.
SMALL_RUN = [*QUIET, "--trainer.max_epochs=2", "--trainer.limit_train_batches=8", "--trainer.limit_val_batches=4"]


def idx_bytes(array: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file (big-endian header, then the raw bytes)."""
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.contiguous().numpy().tobytes()


def write_tiny_dataset(
    folder: Path, train_size: int = 120, test_size: int = 40, gz: bool = True, num_classes: int = 10
) -> DataSet:
    """Write four small IDX files of random images, named like MNIST's (and FashionMNIST's), into
    ``folder``; return a descriptor of them (MD5s of what was written) that looks for them there.

    The real MNIST and KMNIST cannot be downloaded here; a data set in their format is all the
    project needs to know of one, which this shows."""
    generator = torch.Generator().manual_seed(0)
    arrays = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (train_size, 28, 28), dtype=torch.uint8, generator=generator),
        "train-labels-idx1-ubyte": torch.arange(train_size, dtype=torch.uint8) % num_classes,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (test_size, 28, 28), dtype=torch.uint8, generator=generator),
        "t10k-labels-idx1-ubyte": torch.arange(test_size, dtype=torch.uint8) % num_classes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    md5s = []
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
        md5s.append(hashlib.md5(data).hexdigest())
    return DataSet(
        name="MNIST",
        files=idx_files(*md5s),
        torchvision_class="torchvision.datasets.MNIST",
        train_size=train_size,
        mean=0.5,
        std=0.29,
        class_names={"en": tuple(f"digit {digit}" for digit in range(num_classes))},
        local_dirs=(folder,),
    )


def real_source_dir() -> Path | None:
    """A folder holding the real FashionMNIST files, if this machine has one."""
    for folder in FASHION_MNIST.search_dirs():
        if all((folder / f"{f.name}.gz").is_file() or (folder / f.name).is_file() for f in FASHION_MNIST.all_files()):
            return folder
    return None


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


def save_classifier_checkpoint(path: Path, net_class: type[nn.Module], **init_args: Any) -> Path:
    """A checkpoint of the classifier around ``net_class(**init_args)``, its hyperparameters in the form
    LightningCLI stores them (the network as class_path and init_args), as a fit through the CLI writes."""
    from fmnist_pl.module import FashionClassifier

    module = FashionClassifier(net=net_class(**init_args))
    class_path = f"{net_class.__module__}.{net_class.__qualname__}"
    hparams = {
        **module.hparams,
        "net": {"class_path": class_path, "init_args": init_args},
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    }
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def accuracy_on_test_split(ckpt: Path, data_dir: Path) -> float:
    """A checkpoint's accuracy on the 10,000 test images, scored here without Lightning."""
    from fmnist_pl.data.files import raw_dir, read_split
    from fmnist_pl.pixels import to_unit
    from fmnist_pl.trained import trained_network

    images, labels = read_split(raw_dir(data_dir, FASHION_MNIST), FASHION_MNIST, "test")
    with torch.no_grad():
        predicted = trained_network(ckpt)(to_unit(images.unsqueeze(1))).argmax(1)
    return (predicted == labels.long()).double().mean().item()


def scalar_events(run_dir: Path) -> dict[str, list[Any]]:
    """Every scalar event in a run folder's own TensorBoard event files, by tag, a file after the
    one written before it.

    Files are taken in the order they were started (their first event's time), not by name as
    TensorBoard's directory reader does: a test resumes a killed run in its own process, whose
    file can be named within the same second as the killed one's and with a smaller process id.
    """
    files = sorted(
        run_dir.glob("events.out.tfevents.*"), key=lambda f: next(iter(EventFileLoader(str(f)).Load())).wall_time
    )
    events: dict[str, list[Any]] = {}
    for path in files:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            events.setdefault(tag, []).extend(accumulator.Scalars(tag))
    return events


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar in a run folder's own TensorBoard event files, by tag (:func:`scalar_events`)."""
    return {tag: [event.value for event in events] for tag, events in scalar_events(run_dir).items()}


def scalar_steps(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of one scalar tag in a run folder's own event files."""
    return [(event.step, event.value) for event in scalar_events(run_dir).get(tag, [])]


def hparams_sessions(run_dir: Path) -> list[dict]:
    """The hparams plugin's session-start records in a run folder's own event files."""
    sessions = []
    for events in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        sessions.append({k: v for k, v in data.session_start_info.hparams.items()})
    return sessions
