"""``fit`` and ``test`` with ``--trainer.strategy ddp --trainer.devices 2`` on the CPU (gloo), through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.cli import main
from fmnist_pl.data.datamodule import FashionMNISTDataModule

from .helpers import run_cli, scalars
from .probes import fingerprint

DDP = [
    "--trainer.strategy=ddp",
    "--trainer.devices=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
]


def seen_by_both(folder: Path, stage: str) -> list[torch.Tensor]:
    records = [torch.load(folder / f"{stage}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert all(record["world_size"] == 2 for record in records)
    return [record["seen"] for record in records]


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
def test_two_process_fit_and_test_see_every_image_once_and_sync_metrics(
    tmp_path: Path, real_data_dir: Path, loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PIL path trains on 10,000 of the images (validating 2 batches): decoding them costs seconds.
    val_size, steps = (5000, 55) if loader == "tensor" else (50_000, 10)
    data = [f"--data.data_dir={real_data_dir}", f"--data.loader={loader}", "--data.batch_size=500"]
    data += [f"--data.val_size={val_size}"] + ([] if loader == "tensor" else ["--trainer.limit_val_batches=2"])
    adam = ["--model.optimizer=torch.optim.AdamW", "--model.optimizer.lr=0.003"]  # trained in a few steps
    record = ["--trainer.callbacks+=tests.probes.Recorder", f"--trainer.callbacks.out={tmp_path / 'seen'}"]
    # With Lightning's flags that act per batch: validation twice in the epoch, gradient clipping.
    # (On one data path: the flags do not depend on it, and the PIL path's extra validation costs seconds.)
    flags = ["--trainer.val_check_interval=0.5", "--trainer.gradient_clip_val=1.0"] if loader == "tensor" else []
    run_cli(
        ["fit", *DDP, *data, *adam, *record, *flags, "--trainer.max_epochs=1", "--figures.enabled=false"],
        cwd=tmp_path,
        timeout=300,
    )
    ckpt = tmp_path / "lightning_logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == steps  # half the images a process, batch 500
    assert len(scalars(ckpt.parent.parent)["val/acc"]) == (2 if flags else 1)
    reference = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False, shuffle=False, val_size=val_size)
    reference.setup("fit"), reference.setup("test")
    # Training: disjoint halves of the training images (they split evenly), covering all.
    train = seen_by_both(tmp_path / "seen", "fit")
    assert [len(part) for part in train] == [500 * steps, 500 * steps]
    expected_train = torch.cat([fingerprint(images) for images, _ in reference.train_dataloader()])
    torch.testing.assert_close(torch.cat(train).sort().values, expected_train.sort().values, rtol=0, atol=1e-6)
    if loader != "tensor":
        # Its test loader under DDP is Lightning's DistributedSampler put into a TorchvisionLoader,
        # the re-instantiation the fit above went through; the test stage is checked on the tensor
        # path (its own sharding) only, as a second 2-process start costs ~9 s.
        return

    # With the figures callback on: it must not wait on a collective that only one process enters.
    run_cli(["test", f"--ckpt_path={ckpt}", *DDP, *record], cwd=tmp_path, timeout=300)
    # Test: 5,000 images each, every one of the 10,000 exactly once (no padding, no duplicates).
    test = seen_by_both(tmp_path / "seen", "test")
    assert [len(part) for part in test] == [5000, 5000]
    expected_test = torch.cat([fingerprint(images) for images, _ in reference.test_dataloader()])
    torch.testing.assert_close(torch.cat(test).sort().values, expected_test.sort().values, rtol=0, atol=1e-6)

    # The logged test accuracy is over all 10,000 images (synced), not over rank 0's half: it equals
    # what one process gets on the same checkpoint.
    ddp_acc = scalars(ckpt.parent.parent / f"test-{ckpt.stem}")["test/acc"][0]
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            "test",
            f"--ckpt_path={ckpt}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            "--figures.enabled=false",
        ]
    )
    single_acc = cli.trainer.callback_metrics["test/acc"].item()
    assert ddp_acc == pytest.approx(single_acc, abs=1e-6)
    assert single_acc > 0.3  # trained: well above chance (0.1) after 55 steps


@pytest.mark.slow
def test_two_process_predict_writes_the_single_process_csv(
    tmp_path: Path, trained_checkpoint: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from fmnist_pl.data.files import raw_dir, read_split
    from fmnist_pl.data.sets import FASHION_MNIST

    images, _ = read_split(raw_dir(real_data_dir, FASHION_MNIST), FASHION_MNIST, "test")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(images[:11]):  # odd: the two shards differ in size
        Image.fromarray(image.numpy()).save(photos / f"{i:02d}.png")
    common = [
        f"--ckpt_path={trained_checkpoint}",
        f"--data.predict_path={photos}",
        "--trainer.enable_progress_bar=false",
    ]
    run_cli(["predict", *common, *DDP, f"--predictions.output={tmp_path / 'ddp.csv'}"], cwd=tmp_path, timeout=300)
    monkeypatch.chdir(tmp_path)
    main(["predict", *common, "--trainer.accelerator=cpu", f"--predictions.output={tmp_path / 'one.csv'}"])
    ddp, one = (tmp_path / "ddp.csv").read_text(), (tmp_path / "one.csv").read_text()
    assert len(one.splitlines()) == 12 and ddp == one  # a header and 11 rows, each with its own path
