"""Training time per image, side by side: the tutorial's loop, the project's two data paths, and the floors.

Every variant trains configs/seed.yaml's recipe (MLP 784-256-128-10, SGD lr 0.01, batch 64, no
shuffling, ToTensor only) on the same machine in one run, each in a subprocess of its own, so its
peak RSS is its own:

  (a) tutorial     a faithful plain-PyTorch copy of the tutorial's loop (torchvision dataset, PIL,
                   ToTensor, DataLoader without workers) over all 60,000 training images; the reference.
  (b) fast         ``python -m fmnist_pl fit --config configs/seed.yaml`` on the default data path:
                   uint8 tensors on the training device, batches transformed on the device; with
                   the default callbacks, logger and progress bar, as a user's fit has them.
  (c) torchvision  the same fit with ``--data.loader torchvision``.
  (d) bare         the floor: a bare eager loop, no Lightning, over the same in-memory uint8 tensors
                   (the 55,000 images the project trains on), the same network and optimizer.
  (e) lightning    Lightning's own floor: the smallest LightningModule (forward, loss, return it;
                   no metrics, no callbacks, no logger) over the same batches as (d).

The project holds 5,000 training images out for validation, so the figures are per training image
(the epoch's seconds divided by its images), reported as seconds per 1,000 images. A training
epoch is timed from its first batch to its last optimizer step (validation excluded); the figure is
the fastest of the epochs after the first (which pays for warm-up), over every round: on a shared
machine noise only ever adds time, and the medians moved by up to 50% from one run to the next
where the fastest epochs stayed within a few percent ("rounds" lists each round's median). "vs (a)" is (a)'s time per
image divided by the variant's (higher is faster); "vs (d)" is the variant's divided by (d)'s (the
cost over the floor, lower is better); "vs (e)" the same over Lightning's own floor.

    python benchmarks/epoch_time.py [--epochs 4] [--rounds 3] [--data-dir data] [--accelerator auto]

``--limit-batches N`` trains N batches an epoch in every variant (the test suite's smallest run);
``--progress-bar lightning`` or ``off`` changes the bar of (b) and (c) (to see what it costs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EpochTimer, synchronize, timed_seed_fit

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("tutorial", "fast", "torchvision", "bare", "lightning")
TUTORIAL_IMAGES = 60_000
PROJECT_IMAGES = 55_000


class TutorialNet(torch.nn.Module):
    """The tutorial's network: three Linear layers, ReLU between, flattening in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 256)
        self.fc2 = torch.nn.Linear(256, 128)
        self.fc3 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def tutorial_network() -> torch.nn.Module:
    return TutorialNet()


def tutorial_train_epoch(model, optimizer, loader, device: torch.device, limit: int | None = None) -> None:
    """The tutorial's train(): one pass over the loader, step after every batch."""
    from torch.nn import functional as F

    model.train()
    for images, target in itertools.islice(loader, limit):
        images, target = images.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), target)
        loss.backward()
        optimizer.step()


def tutorial_epochs(data_dir: str, epochs: int, device: torch.device, limit: int | None = None) -> list[float]:
    """The tutorial's train() loop, verbatim in substance; returns seconds per epoch."""
    from torch.utils import data
    from torchvision import datasets, transforms

    trainset = datasets.FashionMNIST(data_dir, train=True, download=False, transform=transforms.ToTensor())
    train_loader = data.DataLoader(dataset=trainset, batch_size=64)
    model = tutorial_network().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        tutorial_train_epoch(model, optimizer, train_loader, device, limit)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def training_tensors(data_dir: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images and labels the project trains on (its split), on ``device``, in file order."""
    from fmnist_pl.data.datamodule import FashionMNISTDataModule

    data = FashionMNISTDataModule(data_dir=data_dir, download=False, shuffle=False, normalize=False)
    data.setup("fit")
    return data.train_set.images.to(device), data.train_set.labels.to(device)


def batches(images: torch.Tensor, labels: torch.Tensor, limit: int | None = None, batch_size: int = 64):
    """seed.yaml's batches: in order, scaled to [0, 1], as the project's tensor path makes them."""
    stop = len(labels) if limit is None else min(len(labels), limit * batch_size)
    for start in range(0, stop, batch_size):
        yield images[start : start + batch_size].unsqueeze(1).float().div_(255), labels[start : start + batch_size]


def bare_epochs(data_dir: str, epochs: int, device: torch.device, limit: int | None = None) -> list[float]:
    """The floor: forward, loss, backward, step, in a plain loop; returns seconds per epoch."""
    from torch.nn import functional as F

    from fmnist_pl.model import MLP

    images, labels = training_tensors(data_dir, device)
    torch.manual_seed(1)
    model = MLP((256, 128)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        for x, y in batches(images, labels, limit):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def lightning_floor_epochs(data_dir: str, epochs: int, device: torch.device, limit: int | None = None) -> list[float]:
    """The smallest LightningModule over the same batches, no callbacks or logger; seconds per epoch."""
    from lightning.pytorch import LightningModule, Trainer
    from torch.nn import functional as F

    from fmnist_pl.model import MLP

    images, labels = training_tensors(data_dir, device)

    class Batches:
        def __len__(self) -> int:
            return -(-len(labels) // 64) if limit is None else limit

        def __iter__(self):
            return batches(images, labels, limit)

    class Smallest(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = MLP((256, 128))

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(1)
    timer = EpochTimer()
    trainer = Trainer(
        accelerator=device.type,
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(Smallest(), Batches())
    return timer.train_seconds


def project_epochs(
    data_dir: str,
    epochs: int,
    loader: str,
    accelerator: str,
    log_dir: str,
    limit: int | None = None,
    progress_bar: str = "default",
) -> list[float]:
    """The project's own fit of configs/seed.yaml; returns seconds per training epoch."""
    extra = [f"--trainer.accelerator={accelerator}", f"--data.loader={loader}"]
    if limit is not None:
        extra += [f"--trainer.limit_train_batches={limit}", f"--trainer.limit_val_batches={limit}"]
    return timed_seed_fit(epochs, data_dir, log_dir, extra, progress_bar).train_seconds


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Run one variant in this process and return its figures."""
    use_cuda = args.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    if name == "tutorial":
        times = tutorial_epochs(args.data_dir, args.epochs, device, args.limit_batches)
    elif name == "bare":
        times = bare_epochs(args.data_dir, args.epochs, device, args.limit_batches)
    elif name == "lightning":
        times = lightning_floor_epochs(args.data_dir, args.epochs, device, args.limit_batches)
    else:
        loader = "tensor" if name == "fast" else "torchvision"
        times = project_epochs(
            args.data_dir, args.epochs, loader, args.accelerator, args.log_dir, args.limit_batches, args.progress_bar
        )
    images = TUTORIAL_IMAGES if name == "tutorial" else PROJECT_IMAGES
    result = {
        "variant": name,
        "images": images if args.limit_batches is None else min(images, 64 * args.limit_batches),
        "device": device.type,
        "epoch_seconds": times,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant, interleaved (a b c d e a b ...)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--log-dir", default="/tmp/fmnist_bench_logs")
    parser.add_argument("--limit-batches", type=int, help="train only this many batches an epoch (a quick check)")
    parser.add_argument(
        "--progress-bar",
        choices=("default", "lightning", "off"),
        default="default",
        help="the bar of (b) and (c): the fit's default, Lightning's TQDMProgressBar drawn every batch, or none",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant here and print JSON (internal)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every variant in this process (a quick check of the script: the peak RSS is then shared)",
    )
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, args)))
        return

    from fmnist_pl.data import sets
    from fmnist_pl.data.files import ensure_files

    ensure_files(args.data_dir, sets.FASHION_MNIST)
    # Interleaved rounds: a slow spell of a shared machine then slows every variant a little rather
    # than one variant a lot.
    names = args.variants.split(",")
    if set(names) - set(VARIANTS) or not {"tutorial", "bare", "lightning"} <= set(names):
        parser.error(
            "--variants: a comma-separated list of " + ", ".join(VARIANTS) + ", with tutorial, bare, lightning"
        )
    runs: dict[str, list[dict]] = {name: [] for name in names}
    if args.in_process:
        sys.argv = sys.argv[:1]  # the fits' CLI parses its own arguments, not this script's
    for _ in range(args.rounds):
        for name in names:
            if args.in_process:
                runs[name].append(run_variant(name, args))
                continue
            command = [
                sys.executable,
                __file__,
                f"--variant={name}",
                f"--epochs={args.epochs}",
                f"--data-dir={args.data_dir}",
                f"--accelerator={args.accelerator}",
                f"--log-dir={args.log_dir}",
                f"--progress-bar={args.progress_bar}",
                *([f"--limit-batches={args.limit_batches}"] if args.limit_batches else []),
            ]
            env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
            output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
            runs[name].append(json.loads(output.split("RESULT ", 1)[1]))

    def timed_epochs(result: dict) -> list[float]:
        times = result["epoch_seconds"]
        return times[1:] if len(times) > 1 else times

    def per_image(result: dict) -> float:
        return statistics.median(timed_epochs(result)) / result["images"]

    seconds = {name: min(min(timed_epochs(r)) / r["images"] for r in results) for name, results in runs.items()}
    tutorial, bare, floor = seconds["tutorial"], seconds["bare"], seconds["lightning"]
    first = runs["tutorial"][0]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {first['device']}, "
        f"{args.epochs} epochs each, fastest epoch of {args.rounds} interleaved rounds"
    )
    print(
        f"{'variant':<12} {'s/epoch':>8} {'images':>7} {'s/1k img':>9} {'vs (a)':>8} {'vs (d)':>8} {'vs (e)':>8} "
        f"{'round medians s/1k img':>24} {'peak RSS MB':>12} {'max alloc MB':>13}"
    )
    for name, results in runs.items():
        images = results[0]["images"]
        spread = " ".join(f"{1000 * per_image(r):.4f}" for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        alloc = f"{max(r['max_allocated_mb'] for r in results):.0f}" if "max_allocated_mb" in results[0] else "-"
        print(
            f"{name:<12} {seconds[name] * images:>8.3f} {images:>7} {1000 * seconds[name]:>9.4f} "
            f"{tutorial / seconds[name]:>7.2f}x {seconds[name] / bare:>7.2f}x {seconds[name] / floor:>7.2f}x "
            f"{spread:>24} {rss:>12.0f} {alloc:>13}"
        )


if __name__ == "__main__":
    main()
