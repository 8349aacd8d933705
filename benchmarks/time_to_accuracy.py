"""Time to accuracy, side by side: how long a user waits for a model of a given test accuracy.

Every variant runs in one run on the same machine, one after another, each in a process of its own:

  tutorial      the tutorial's plain-PyTorch loop (as ``epoch_time.py`` has it: torchvision dataset,
                PIL, DataLoader, SGD 0.01, batch 64) for its 30 epochs, then its own test pass
  seed, dropout, best_without_teacher
                ``python -m fmnist_pl fit --config configs/<name>.yaml``
  fast-2, fast, fast-14
                ``configs/fast.yaml`` for 2, 8 (its own) and 14 epochs (the one-cycle schedule and the
                single validation follow the epochs)
  bare          the floor: ``fast.yaml``'s recipe in a bare eager loop (no Lightning) over the project's
                own tensor loader, the same network, optimizer, schedule, flips and flip averaging

Protocol. "whole" is the wall time of the whole command, from starting the process to its exit:
Python's start, imports, argument parsing, reading the data files (already extracted into the data
folder), every epoch with its validation, checkpoint writes and the figures where a config draws
them; the progress bar is left as a user gets it. "train" is the fit loop alone: from the run's
first TensorBoard event (written when fit starts) to its last (the last epoch's validation), or the
loop's own timer for the tutorial and the bare floor. Test accuracy is that of the run's
``last.ckpt`` on the 10,000 test images (scored in this process; ``test --ckpt_path`` gives the
same figure, tested), as mean ± standard deviation over the seeds (``seed_everything`` 1, 2, ...);
"min" is the worst seed. "x tutorial" is the tutorial's whole time over the variant's, for
variants at least as accurate as the tutorial (its printed 86.63%, the reference the targets use);
"/ bare" is the variant's whole time over the bare floor's (on a CPU, the figure a target is set on).

    python benchmarks/time_to_accuracy.py [--seeds 5] [--long-seeds 1] [--data-dir data] [--variants a,b]

``--max-epochs 1 --seeds 1 --long-seeds 1`` is the smallest run (the test suite's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

TUTORIAL_PRINTED = 86.63  # the tutorial's own printout after 30 epochs, its first experiment
# name: (config, extra options, target, seeds kind)
VARIANTS: dict[str, tuple[str | None, list[str], str, str]] = {
    "tutorial": (None, [], "the reference", "long"),
    "seed": ("seed.yaml", [], "", "long"),
    "dropout": ("dropout.yaml", [], "", "long"),
    "best_without_teacher": ("best_without_teacher.yaml", [], "", "long"),
    "fast-2": ("fast.yaml", ["--trainer.max_epochs=2"], ">= 86.63% in <= 6.5 s", "short"),
    "fast": ("fast.yaml", [], ">= 89.0% (no seed < 88.7%) in <= 10 s", "short"),
    "fast-14": ("fast.yaml", ["--trainer.max_epochs=14"], ">= 90.0% in <= 16 s", "short"),
    "bare": (None, [], "the floor of fast", "short"),
}


def tutorial(data_dir: str, epochs: int) -> dict:
    """The tutorial's loop and its test pass (ToTensor only, as the tutorial tests its first network)."""
    import torch
    from epoch_time import tutorial_network, tutorial_train_epoch
    from torch.utils import data
    from torchvision import datasets, transforms

    torch.manual_seed(1)
    to_tensor = transforms.ToTensor()
    train = data.DataLoader(datasets.FashionMNIST(data_dir, train=True, transform=to_tensor), batch_size=64)
    test = data.DataLoader(datasets.FashionMNIST(data_dir, train=False, transform=to_tensor), batch_size=64)
    model = tutorial_network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(epochs):
        tutorial_train_epoch(model, optimizer, train, torch.device("cpu"))
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in test)
    return {"train_s": train_seconds, "acc": 100 * correct / 10_000}


def bare(data_dir: str, epochs: int, seed: int) -> dict:
    """fast.yaml's recipe without Lightning: AdamW (fused) with one-cycle per step, label smoothing
    0.1, flips, flip averaging at the test."""
    import torch
    from torch.nn import functional as F

    from fmnist_pl.data.datamodule import FashionMNISTDataModule
    from fmnist_pl.model import MLP, FlipAveraged

    torch.manual_seed(seed)
    datamodule = FashionMNISTDataModule(data_dir=data_dir, download=False, batch_size=256, flip=True, seed=seed)
    datamodule.setup("fit")
    datamodule.setup("test")
    train = datamodule.train_dataloader()
    net = MLP((256, 128))
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.008, weight_decay=0.05, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.008, total_steps=epochs * len(train))
    start = time.perf_counter()
    for epoch in range(epochs):
        train.sampler.set_epoch(epoch)
        for images, labels in train:
            loss = F.cross_entropy(net(images), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    train_seconds = time.perf_counter() - start
    scorer = FlipAveraged(net.eval())
    with torch.no_grad():
        correct = sum((scorer(x).argmax(1) == y).sum().item() for x, y in datamodule.test_dataloader())
    return {"train_s": train_seconds, "acc": 100 * correct / 10_000}


def fit(name: str, args: argparse.Namespace, seed: int, log_dir: Path) -> dict:
    """One whole ``fit`` command in a process of its own; its times and its last.ckpt's test accuracy."""
    config, extra, _, _ = VARIANTS[name]
    if args.max_epochs:
        extra = [*extra, f"--trainer.max_epochs={args.max_epochs}"]
    save_dir = log_dir / f"{name}-{seed}"
    command = [
        sys.executable,
        "-m",
        "fmnist_pl",
        "fit",
        "--config",
        str(REPO / "configs" / config),
        *extra,
        f"--seed_everything={seed}",
        f"--data.data_dir={args.data_dir}",
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    whole = time.perf_counter() - start
    (run_dir,) = save_dir.glob("*/version_0")
    return {"whole_s": whole, "train_s": fit_loop_seconds(run_dir), "acc": 100 * test_accuracy(run_dir, args.data_dir)}


def fit_loop_seconds(run_dir: Path) -> float:
    """From the run's first TensorBoard event to its last."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [
        event.wall_time for path in run_dir.glob("events.out.tfevents.*") for event in EventFileLoader(str(path)).Load()
    ]
    return max(times) - min(times)


def test_accuracy(run_dir: Path, data_dir: str) -> float:
    import torch

    from fmnist_pl.data import sets
    from fmnist_pl.data.files import raw_dir, read_split
    from fmnist_pl.pixels import to_unit
    from fmnist_pl.trained import trained_network

    images, labels = read_split(raw_dir(data_dir, sets.FASHION_MNIST), sets.FASHION_MNIST, "test")
    with torch.no_grad():
        scores = trained_network(run_dir / "checkpoints" / "last.ckpt")(to_unit(images.unsqueeze(1)))
    return (scores.argmax(1) == labels.long()).double().mean().item()


def in_own_process(name: str, args: argparse.Namespace, seed: int) -> dict:
    """The tutorial or the bare floor in a process of its own (``--variant``), timed from outside."""
    command = [sys.executable, __file__, f"--variant={name}", f"--seed={seed}", f"--data-dir={args.data_dir}"]
    if args.max_epochs:
        command.append(f"--max-epochs={args.max_epochs}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    whole = time.perf_counter() - start
    return {"whole_s": whole, **json.loads(output.split("RESULT ", 1)[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the fast variants and the bare floor")
    parser.add_argument("--long-seeds", type=int, default=1, help="seeds of the tutorial and the long configs")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--max-epochs", type=int, help="cap every variant's epochs (a quick check of the script)")
    parser.add_argument("--variant", choices=("tutorial", "bare"), help="run one here and print JSON (internal)")
    parser.add_argument("--seed", type=int, default=1, help="with --variant")
    args = parser.parse_args()
    if args.variant == "tutorial":
        print("RESULT " + json.dumps(tutorial(args.data_dir, args.max_epochs or 30)))
        return
    if args.variant == "bare":
        print("RESULT " + json.dumps(bare(args.data_dir, args.max_epochs or 8, args.seed)))
        return

    import torch

    from fmnist_pl.data import sets
    from fmnist_pl.data.files import ensure_files

    ensure_files(args.data_dir, sets.FASHION_MNIST)
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    rows = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for name in names:
            seeds = range(1, 1 + (args.seeds if VARIANTS[name][3] == "short" else args.long_seeds))
            if name in ("tutorial", "bare"):
                rows[name] = [in_own_process(name, args, seed) for seed in seeds]
            else:
                rows[name] = [fit(name, args, seed, Path(log_dir)) for seed in seeds]

    reference = statistics.mean(r["whole_s"] for r in rows["tutorial"]) if "tutorial" in rows else None
    floor = statistics.mean(r["whole_s"] for r in rows["bare"]) if "bare" in rows else None
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, CPU only"
        + (f", max {args.max_epochs} epochs" if args.max_epochs else "")
    )
    print(
        f"{'variant':<22} {'seeds':>5} {'whole s':>8} {'train s':>8} {'test acc %':>13} {'min %':>6} "
        f"{'x tutorial':>10} {'/ bare':>7}  target"
    )
    for name, results in rows.items():
        accs = [r["acc"] for r in results]
        whole = statistics.mean(r["whole_s"] for r in results)
        train = statistics.mean(r["train_s"] for r in results)
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        faster = f"{reference / whole:.2f}x" if reference and statistics.mean(accs) >= TUTORIAL_PRINTED else "-"
        over_floor = f"{whole / floor:.2f}x" if floor else "-"
        print(
            f"{name:<22} {len(results):>5} {whole:>8.2f} {train:>8.2f} {statistics.mean(accs):>7.2f} ± {spread:<4.2f} "
            f"{min(accs):>6.2f} {faster:>10} {over_floor:>7}  {VARIANTS[name][2]}"
        )
        print("  per seed: " + ", ".join(f"{r['acc']:.2f}% {r['whole_s']:.1f} s" for r in results))


if __name__ == "__main__":
    main()
