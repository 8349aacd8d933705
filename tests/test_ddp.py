"""Two real processes on the CPU (gloo): disjoint, complete training shards; exact test counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmnist_pl.data.datamodule import FashionMNISTDataModule

from .conftest import REPO
from .ddp_probe import fingerprint


@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_two_process_ddp_shards_are_disjoint_and_complete(tmp_path: Path, real_data_dir: Path, loader: str) -> None:
    out = tmp_path / "seen.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_probe.py"), str(real_data_dir), str(out), loader],
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600,
    )
    probe = torch.load(out, weights_only=True)

    data = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False, shuffle=False, group_batches=1)
    data.setup("fit")
    expected = torch.cat([fingerprint(images) for images, _ in data.train_dataloader()])
    seen = probe["train_seen"]
    assert seen.shape == (2, 27500)  # 55,000 split evenly
    torch.testing.assert_close(seen.flatten().sort().values, expected.sort().values, rtol=0, atol=1e-6)
    assert probe["test_counts"].tolist() == [5000, 5000]
    assert 0.3 < probe["test_acc"] <= 1.0  # trained: well above chance (0.1) after 55 steps
