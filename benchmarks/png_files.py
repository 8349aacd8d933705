"""The benchmarks' image files: the first test images of FashionMNIST, each written as a PNG."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from fmnist_pl.data import sets
from fmnist_pl.data.files import ensure_files, read_split


def write_test_pngs(data_dir: str, folder: Path, count: int) -> list[Path]:
    """Write the first ``count`` test images into ``folder`` as ``0000.png``, ``0001.png``, ...; return them."""
    images = read_split(ensure_files(data_dir, sets.FASHION_MNIST), sets.FASHION_MNIST, "test")[0][:count]
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image.numpy()).save(path)
    return paths
