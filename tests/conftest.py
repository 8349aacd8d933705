"""Shared fixtures: the real FashionMNIST files, one small trained checkpoint and one teacher run.

Helpers the tests import live in ``helpers.py``; this file holds fixtures only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist_pl.data.files import ENV_VAR, FASHION_MNIST_FILES, ensure_files, raw_dir

from .helpers import REPO, SMALL_RUN, real_source_dir


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


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """``last.ckpt`` of one small fit (dropout 0.2, otherwise the defaults), shared by the tests that
    only need a trained checkpoint (predict, export); they add at most a ``predict/`` folder to its run."""
    from fmnist_pl.cli import main

    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(
            [
                "fit",
                *SMALL_RUN,
                f"--data.data_dir={real_data_dir}",
                "--model.net.dropout=0.2",
                "--figures.enabled=false",
            ]
        )
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
                "--model.net=fmnist_pl.model.MLP",
                "--model.net.hidden_sizes=[32]",
                "--figures.enabled=false",
            ]
        )
    return folder / "lightning_logs" / "teacher"
