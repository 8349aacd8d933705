"""Shared fixtures: the real FashionMNIST files, one small trained checkpoint and one teacher run.

Helpers the tests import live in ``helpers.py``; this file holds fixtures only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmnist_pl.data.files import ensure_files, raw_dir
from fmnist_pl.data.sets import FASHION_MNIST

from .helpers import REPO, SMALL_RUN, real_source_dir


@pytest.fixture(scope="session", autouse=True)
def command_line_of_its_own() -> Iterator[None]:
    """The CLI run in-process sees only the arguments a test gives it, as ``python -m fmnist_pl ARGS``
    would: pytest's own stay out of ``sys.argv`` (LightningCLI warns when it finds both)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", sys.argv[:1])
        yield


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with the real, verified FashionMNIST files, extracted once per test session."""
    source = real_source_dir()
    if source is None:
        pytest.skip("real FashionMNIST not on this machine: apt-get install dataset-fashion-mnist or set $FMNIST_DATA")
    data_dir = tmp_path_factory.mktemp("fmnist")
    ensure_files(data_dir, FASHION_MNIST, source, download=False)
    assert sorted(p.name for p in raw_dir(data_dir, FASHION_MNIST).iterdir()) == sorted(
        f.name for f in FASHION_MNIST.all_files()
    )
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server of its own, on loopback, in a temporary folder; its SQLAlchemy URL.

    Debian's ``postgresql`` package (``.ci/run`` installs it). The server runs as the ``postgres``
    user when the tests run as root (PostgreSQL refuses to run as root), otherwise as the test's user.
    """
    initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdb:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    bin_dir = initdb[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    quiet = {"check": True, "capture_output": True}
    initialise = [bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "fmnist", "--no-sync"]
    subprocess.run([*as_server_user, *initialise], **quiet)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    pg_ctl = [*as_server_user, bin_dir / "pg_ctl", "-D", data, "-w"]
    subprocess.run([*pg_ctl, "-o", options, "-l", folder / "server.log", "start"], **quiet)
    try:
        yield f"postgresql+psycopg://fmnist@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
