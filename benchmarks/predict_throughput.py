"""Images per second for ``predict``: the 10,000 test images from the data set, and 1,000 PNG files.

Both through the project's own ``python -m fmnist_pl predict`` run in this process (``main``), in one
run on the same machine, imports excluded. The figures include everything else the command does:
building the trainer, loading the checkpoint, reading the images (for PNGs: finding, decoding,
converting and fitting each file), the forward passes and writing the CSV.

    python benchmarks/predict_throughput.py --ckpt_path CKPT [--data-dir data] [--files 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from png_files import write_test_pngs

from fmnist_pl.cli import main as fmnist_pl


def images_per_second(ckpt: str, data_dir: str, out_dir: str, extra: list[str], count: int) -> float:
    start = time.perf_counter()
    fmnist_pl(
        [
            "predict",
            f"--ckpt_path={ckpt}",
            f"--data.data_dir={data_dir}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={out_dir}",  # where the run's config.yaml goes without a logger
            "--trainer.enable_model_summary=false",
            f"--predictions.output={out_dir}/predictions.csv",
            *extra,
        ]
    )
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--files", type=int, default=1000, help="PNG files to write and predict")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # predict's LightningCLI gets its arguments from images_per_second alone
    with tempfile.TemporaryDirectory() as tmp:
        pngs = Path(tmp) / "pngs"
        write_test_pngs(args.data_dir, pngs, args.files)
        dataset = images_per_second(args.ckpt_path, args.data_dir, tmp, [], 10_000)
        files = images_per_second(args.ckpt_path, args.data_dir, tmp, [f"--data.predict_path={pngs}"], args.files)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"predict, 10,000 test images from the data set: {dataset:,.0f} images/s")
    print(f"predict, {args.files:,} PNG files:{'':<{23 - len(f'{args.files:,}')}}{files:,.0f} images/s")


if __name__ == "__main__":
    main()
