"""``python -m fmnist_pl show``: look at the data as the tutorial does, with class names.

A grid of images with the class name under each one, or one image alone with its name as the title;
``--augment`` shows them as training sees them (the training augmentations, drawn as a fit draws
them). On screen when there is a display and no ``--out``; without a display, a PNG in
``lightning_logs/show/`` (or ``--out FILE.png``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from fmnist_pl import plots
from fmnist_pl.data import sets
from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.files import ensure_files, read_split
from fmnist_pl.errors import ConfigError, check_range
from fmnist_pl.pixels import to_unit

DEFAULT_FOLDER = Path("lightning_logs") / "show"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmnist_pl show", description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "test"), default="train", help="which images (default: train)")
    parser.add_argument("--n", type=int, default=64, help="images in the grid, the first N of the split (default: 64)")
    parser.add_argument("--index", type=int, help="show this one image alone, its class name as the title")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="apply the training augmentations (random horizontal flips, and shifts with --shift), drawn as "
        "the first epoch of a fit with --seed draws them",
    )
    parser.add_argument("--shift", type=int, default=0, help="with --augment: largest random shift in pixels")
    parser.add_argument("--lang", choices=("en", "ko"), default="en", help="class names in English or Korean")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"write a PNG here instead of showing it on screen (without a display: {DEFAULT_FOLDER}/NAME.png)",
    )
    parser.add_argument("--data.data_dir", dest="data_dir", default="data", help="data folder (default: data)")
    parser.add_argument(
        "--data.dataset",
        dest="dataset",
        default=sets.DEFAULT,
        help=f"import path of the data set's descriptor (default: {sets.DEFAULT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentations with --augment")
    return parser


def default_name(args: argparse.Namespace) -> str:
    """``train-first64-en.png``, ``test-17-ko-augment.png``: what the picture shows."""
    which = f"{args.index}" if args.index is not None else f"first{args.n}"
    return "-".join([args.split, which, args.lang, *(["augment"] if args.augment else [])]) + ".png"


def shown_pixels(args: argparse.Namespace, pixels: torch.Tensor) -> torch.Tensor:
    """The uint8 images to show: with ``--augment``, changed as a fit's first epoch with ``--seed`` changes
    the images it visits first (the training loaders' own augmentations and draws)."""
    if not args.augment:
        return pixels
    check_range("show: --shift", args.shift, 0, 14)
    augmentations = Augmentations.of(flip=True, shift=args.shift)
    return augmentations.apply_(pixels.clone(), augmentations.draws(args.seed, epoch=0, rank=0, count=len(pixels)))


def main(argv: list[str]) -> Path | None:
    """Render the requested view; return the PNG path written, or None when shown on screen."""
    args = build_parser().parse_args(argv)
    if args.out is None and not os.environ.get("DISPLAY"):
        args.out = DEFAULT_FOLDER / default_name(args)
    dataset = sets.load(args.dataset, option="show: --data.dataset")
    folder = ensure_files(args.data_dir, dataset, files=dataset.files[args.split])
    images, labels = read_split(folder, dataset, args.split)
    if args.index is not None:
        if not 0 <= args.index < len(labels):
            raise ConfigError(f"show: --index must be in [0, {len(labels)}), got {args.index}")
        chosen = torch.tensor([args.index])
    else:
        if not 1 <= args.n <= len(labels):
            raise ConfigError(f"show: --n must be in [1, {len(labels)}], got {args.n}")
        chosen = torch.arange(args.n)
    pictures = to_unit(shown_pixels(args, images[chosen]))
    names, font = plots.class_names(dataset, args.lang)
    captions = [names[int(label)] for label in labels[chosen]]

    figure = None
    if args.out is None:
        import matplotlib.pyplot as plt

        figure = plt.figure()
    if args.index is not None:
        figure = plots.single_image(pictures[0].numpy(), captions[0], font, figure=figure)
    else:
        title = f"{args.split}, first {len(chosen)}" + (", as training augments them" if args.augment else "")
        figure = plots.image_grid(pictures.numpy(), captions, font, title=title, figure=figure)
    if args.out is None:
        plt.show()
        return None
    path = plots.save_png(figure, args.out)
    print(f"wrote {path}")
    return path
