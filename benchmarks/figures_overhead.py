"""What the TensorBoard figures cost: the same fit with ``--figures.enabled`` true and false.

Trains configs/seed.yaml for a few epochs in one run, on the same machine, alternating the figures
callback off and on (its defaults: per-class scalars every epoch, figures every 5 epochs and at the
last), two fits each so that warm-up and drift fall on both sides, and prints the median seconds of
the training part of an epoch and of the whole epoch
(training + validation + figures), and the overhead in percent. The training-part median skips the
first epoch, which draws the sample grid once.

    python benchmarks/figures_overhead.py [--epochs 5] [--data-dir data] [--limit-batches N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EpochTimer, timed_seed_fit


def timed_fit(enabled: bool, epochs: int, data_dir: str, log_dir: str, limit: int | None) -> EpochTimer:
    extra = [f"--figures.enabled={str(enabled).lower()}"]
    if limit is not None:
        extra += [f"--trainer.limit_train_batches={limit}", f"--trainer.limit_val_batches={limit}"]
    return timed_seed_fit(epochs, data_dir, log_dir, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--log-dir", default="/tmp/fmnist_bench_logs")
    parser.add_argument("--limit-batches", type=int, help="train and validate only this many batches (a quick check)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the fits' LightningCLI gets its arguments from timed_fit alone
    timers: dict[bool, list[EpochTimer]] = {False: [], True: []}
    for enabled in (False, True, False, True):
        timers[enabled].append(timed_fit(enabled, args.epochs, args.data_dir, args.log_dir, args.limit_batches))

    def pooled(enabled: bool, field: str, skip_first: bool) -> list[float]:
        return [s for t in timers[enabled] for s in getattr(t, field)[1 if skip_first else 0 :]]

    train_off, train_on = (statistics.median(pooled(e, "train_seconds", True)) for e in (False, True))
    epoch_off, epoch_on = (statistics.median(pooled(e, "epoch_seconds", False)) for e in (False, True))
    total_off, total_on = (sum(pooled(e, "epoch_seconds", False)) / 2 for e in (False, True))
    print(f"{args.epochs} epochs of configs/seed.yaml per fit; fits off, on, off, on")
    print(f"{'':<28}{'off':>8}{'on':>8}{'overhead':>10}")
    print(f"{'training part, s/epoch':<28}{train_off:>8.3f}{train_on:>8.3f}{100 * (train_on / train_off - 1):>9.1f}%")
    print(f"{'whole epoch, s (median)':<28}{epoch_off:>8.3f}{epoch_on:>8.3f}{100 * (epoch_on / epoch_off - 1):>9.1f}%")
    print(f"{'all epochs of a fit, s':<28}{total_off:>8.3f}{total_on:>8.3f}{100 * (total_on / total_off - 1):>9.1f}%")


if __name__ == "__main__":
    main()
