"""Image files for ``predict``: find them, and turn any picture into a FashionMNIST-like 28x28 image.

FashionMNIST's images are light objects on a black background, the object fitted into the 28x28
frame with its aspect ratio kept and centred. Photos are usually the other way round (dark object,
light background), so ``invert`` can flip them: ``auto`` decides from the border pixels.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError

from fmnist_pl.data.classes import IMAGE_SHAPE
from fmnist_pl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
Invert = Literal["auto", "true", "false"]


def find_images(spec: str) -> list[Path]:
    """The image files named by ``spec``: a file, a folder (searched recursively) or a glob pattern."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"--data.predict_path {spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"--data.predict_path {spec}: the pattern matches no files")
        return files
    raise DataError(f"--data.predict_path {spec}: no such file or folder")


def load_image(path: Path, invert: Invert = "auto") -> torch.Tensor:
    """Read any PNG/JPEG/BMP/GIF/WebP (gray, RGB or RGBA) as a ``(1, 28, 28)`` float tensor in [0, 1].

    Transparency is composited on black; the picture is turned to grayscale, inverted when asked
    (or, with ``auto``, when its border is mostly light), then scaled so its longer side is 28
    pixels and centred on a black 28x28 canvas.
    """
    with Image.open(path) as opened:
        opened.seek(0)  # the first frame of an animated GIF or WebP
        picture = opened.convert("RGBA")
    black = Image.new("RGBA", picture.size, (0, 0, 0, 255))
    gray = Image.alpha_composite(black, picture).convert("L")
    if invert == "true" or (invert == "auto" and _border_is_light(gray)):
        gray = Image.eval(gray, lambda value: 255 - value)
    height, width = IMAGE_SHAPE[1:]
    scale = min(width / gray.width, height / gray.height)
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    fitted = gray.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(fitted, ((width - size[0]) // 2, (height - size[1]) // 2))
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).reshape(1, height, width)
    return pixels.float().div(255)


def load_images(paths: list[Path], invert: Invert) -> tuple[list[Path], torch.Tensor]:
    """Load every readable file; warn about (and skip) the others. Raises when none can be read."""
    loaded, images = [], []
    for path in paths:
        try:
            images.append(load_image(path, invert))
            loaded.append(path)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            print(f"warning: skipped {path}: cannot be read as an image ({type(err).__name__})", file=sys.stderr)
    if not images:
        raise DataError(f"--data.predict_path: none of the {len(paths)} file(s) could be read as an image")
    return loaded, torch.stack(images)


def _border_is_light(gray: Image.Image) -> bool:
    pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(gray.height, gray.width).float()
    border = torch.cat([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return bool(border.mean() > 127.5)
