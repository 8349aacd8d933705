"""Torch's threads on a shared machine: one fit alone, and two fits at once, by how many threads each uses.

Each variant is the same whole command, ``python -m fmnist_pl fit --config configs/fast.yaml`` at
``--epochs`` epochs (its one-cycle schedule and its one validation follow them), in a process of
its own, its wall time from start to exit; torch takes one thread per core in each:

  alone        one fit, as installed: OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE)
  alone-torch  one fit, torch's own OpenMP waiting (its threads spin for a while before they sleep)
  alone-1      one fit, ``OMP_NUM_THREADS=1``
  two, two-torch, two-1
               two such fits started together; the figure is the time until both have ended

The ratios are each variant's time over "alone" of the same run. Two fits at once, each with a
thread per core, compete for every core; with spinning waits, each thread burns the core the other
fit's thread needs.

    python benchmarks/threads.py [--epochs 2] [--repeats 2] [--data-dir data] [--variants alone,two,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name: (fits started together, how they start)
VARIANTS = {
    "alone": (1, "project"),
    "alone-torch": (1, "torch"),
    "alone-1": (1, "one thread"),
    "two": (2, "project"),
    "two-torch": (2, "torch"),
    "two-1": (2, "one thread"),
}
HOW = {
    "project": "as installed (OMP_WAIT_POLICY=PASSIVE)",
    "torch": "torch's own OpenMP waiting",
    "one thread": "OMP_NUM_THREADS=1",
}


def fit_command(epochs: int, data_dir: str, log_dir: str, extra: list[str], how: str) -> list[str]:
    """The fit; for ``torch``, torch is imported before fmnist_pl, so its OpenMP runtime starts with its own
    defaults (``fmnist_pl`` sets ``OMP_WAIT_POLICY`` only when torch has not read it yet)."""
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "fast.yaml"),
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={log_dir}",
        f"--data.data_dir={data_dir}",
        *extra,
    ]
    if how == "torch":
        code = "import sys, torch; from fmnist_pl.cli import main; main(sys.argv[1:])"
        return [sys.executable, "-c", code, *args]
    return [sys.executable, "-m", "fmnist_pl", *args]


def seconds_of(fits: int, how: str, command: list[str]) -> float:
    """Start ``fits`` copies of ``command`` together; the wall time until the last one exits."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMP_")}
    env["PYTHONPATH"] = str(REPO)
    if how == "one thread":
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(fits)
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a fit failed ({process.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, interleaved")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options for every fit")
    args = parser.parse_args()
    chosen = args.variants.split(",")
    if unknown := [name for name in chosen if name not in VARIANTS]:
        raise SystemExit(f"--variants: unknown {unknown[0]}; choose from {', '.join(VARIANTS)}")
    times: dict[str, list[float]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.repeats):
            for name in chosen:  # interleaved, so a slower minute of the machine touches every variant
                fits, how = VARIANTS[name]
                command = fit_command(args.epochs, args.data_dir, log_dir, args.extra, how)
                times[name].append(seconds_of(fits, how, command))
    print(f"{os.cpu_count()} CPUs; fast.yaml, {args.epochs} epochs, whole command; best of {args.repeats} (all runs)")
    floor = min(times["alone"]) if "alone" in times else None
    for name in chosen:
        fits, how = VARIANTS[name]
        label = f"{'alone' if fits == 1 else 'two at once'}, {HOW[how]}"
        best = min(times[name])
        ratio = f"{best / floor:5.2f}x" if floor else ""
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"{label:<52} {best:6.1f} s {ratio}  ({runs}; median {statistics.median(times[name]):.1f})")


if __name__ == "__main__":
    main()
