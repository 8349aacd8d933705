"""Image files for ``predict``: find them, and turn any picture into a FashionMNIST-like 28x28 image.

FashionMNIST's images are light objects on a black background, the object fitted into the 28x28
frame with its aspect ratio kept and centred. Photos are usually the other way round (dark object,
light background), so ``invert`` can flip them: ``auto`` decides from the border pixels.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from PIL import Image, ImageChops, UnidentifiedImageError

from fmnist_pl.data.png_check import png_shortfall
from fmnist_pl.errors import DataError
from fmnist_pl.pixels import IMAGE_SHAPE, to_unit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
Invert = Literal["auto", "true", "false"]


# The project's own limit, below Pillow's decompression-bomb check (``Image.MAX_IMAGE_PIXELS``, which
# a user may switch off): a 64-megapixel RGBA picture needs about 1 GB while it is composited.
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Skipped:
    """A file ``predict`` found but could not use, and why (one warning line, one CSV row)."""

    path: Path
    reason: str


def find_images(spec: str) -> tuple[list[Path], list[Skipped]]:
    """The image files named by ``spec`` (a file, a folder searched recursively, or a glob pattern),
    and those among them that are no regular file or are links that loop, lead nowhere or, in a
    folder, lead outside it. Links to folders are not followed."""
    path = Path(spec)
    if path.is_file():
        return [path], []
    if path.is_dir():
        found = [Path(top) / name for top, _, names in os.walk(path) for name in names]
        candidates = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
        if not candidates:
            raise DataError(
                f"--data.predict_path {spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        return _sort_out(candidates, inside=path.resolve())
    if glob.has_magic(spec):
        candidates = sorted(Path(p) for p in glob.glob(spec, recursive=True) if not Path(p).is_dir())
        if not candidates:
            raise DataError(f"--data.predict_path {spec}: the pattern matches no files")
        return _sort_out(candidates, inside=None)
    raise DataError(f"--data.predict_path {spec}: no such file or folder")


def _sort_out(candidates: list[Path], inside: Path | None) -> tuple[list[Path], list[Skipped]]:
    files, skipped = [], []
    for path in candidates:
        if path.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # RuntimeError: a loop, on Python before 3.13
                skipped.append(Skipped(path, "a symbolic link that loops or leads nowhere"))
                continue
            if inside is not None and not target.is_relative_to(inside):
                skipped.append(Skipped(path, f"a symbolic link to {target}, outside {inside}"))
                continue
        if not path.is_file():
            skipped.append(Skipped(path, "not a regular file (a pipe, device or socket would block or never end)"))
            continue
        files.append(path)
    return files, skipped


def load_image(source: Path | BinaryIO, invert: Invert = "auto") -> torch.Tensor:
    """Read any PNG/JPEG/BMP/GIF/WebP (gray, RGB or RGBA) as a ``(1, 28, 28)`` float tensor in [0, 1].

    ``source`` is a file or a seekable binary stream (a served request's bytes). Transparency is
    composited on black; the picture is turned to grayscale, inverted when asked (or, with ``auto``,
    when its border is mostly light), then scaled so its longer side is 28 pixels and centred on a
    black 28x28 canvas. Raises ``TooManyPixels`` for a picture over ``MAX_PIXELS`` (before decoding
    it), ``UnreadableImage`` for a PNG whose data is shorter than its header says.
    """
    with Image.open(source) as opened:
        if opened.width * opened.height > MAX_PIXELS:
            raise TooManyPixels(
                f"{opened.width} x {opened.height} pixels is over the {MAX_PIXELS // 1_000_000}-megapixel limit"
            )
        opened.seek(0)  # the first frame of an animated GIF or WebP
        opened.draft("L", (4 * IMAGE_SHAPE[2], 4 * IMAGE_SHAPE[1]))  # JPEG: decoded at 1/2 to 1/8 scale
        gray = _gray_on_black(opened)
        if opened.format == "PNG" and (shortfall := png_shortfall(source)):
            raise UnreadableImage(shortfall)
    if invert == "true" or (invert == "auto" and _border_is_light(gray)):
        gray = Image.eval(gray, lambda value: 255 - value)
    height, width = IMAGE_SHAPE[1:]
    scale = min(width / gray.width, height / gray.height)
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    fitted = gray.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(fitted, ((width - size[0]) // 2, (height - size[1]) // 2))
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).reshape(1, height, width)
    return to_unit(pixels)


def load_images(paths: list[Path], invert: Invert) -> tuple[list[Path], torch.Tensor, list[Skipped]]:
    """Load every readable file and say why each other one was skipped. Raises when none can be read."""
    loaded, images, skipped = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, invert))
            loaded.append(path)
        # One damaged file must not stop the others, and Pillow's decoders raise many kinds of
        # error on damaged data (OSError, SyntaxError, ValueError, EOFError, zlib.error, ...).
        except Exception as err:
            skipped.append(Skipped(path, why_unreadable(err, empty=path.stat().st_size == 0)))
    if not images:
        raise DataError(f"--data.predict_path: none of the {len(paths)} file(s) could be read as an image")
    return loaded, torch.stack(images), skipped


def warn_skipped(skipped: list[Skipped]) -> None:
    """One line on stderr for each skipped file (from the first process only, under DDP)."""
    if rank_zero_only.rank == 0:
        for entry in skipped:
            print(f"warning: skipped {entry.path}: {entry.reason}", file=sys.stderr)


class UnreadableImage(ValueError):
    """A file Pillow could open that this project refuses to use (its message says why)."""


class TooManyPixels(UnreadableImage):
    """A picture over ``MAX_PIXELS``, refused before it is decoded."""


def why_unreadable(err: Exception, empty: bool) -> str:
    """What :func:`load_image`'s error ``err`` means for the file (``empty``: it held no bytes at all)."""
    if isinstance(err, UnreadableImage):
        return str(err)
    if isinstance(err, Image.DecompressionBombError):
        return "a decompression bomb: over Pillow's limit (see PIL.Image.MAX_IMAGE_PIXELS)"
    if isinstance(err, UnidentifiedImageError):
        return "an empty file" if empty else "not an image Pillow can read"
    if "truncated" in str(err):
        return "damaged or truncated: " + str(err)
    return f"damaged: {type(err).__name__}: {err}"


def is_not_an_image(err: Exception) -> bool:
    """Whether :func:`load_image`'s error ``err`` says the bytes are no picture at all (rather than a
    damaged one, or one too large)."""
    return isinstance(err, UnidentifiedImageError)


def is_too_large(err: Exception) -> bool:
    """Whether :func:`load_image`'s error ``err`` refuses a picture for its size in pixels."""
    return isinstance(err, (Image.DecompressionBombError, TooManyPixels))


def _gray_on_black(picture: Image.Image) -> Image.Image:
    """Grayscale with transparent parts black: luminance times alpha, which is what compositing on
    black gives, without the two full-size RGBA copies compositing needs."""
    if "A" in picture.getbands() or "transparency" in picture.info:
        rgba = picture if picture.mode == "RGBA" else picture.convert("RGBA")
        return ImageChops.multiply(rgba.convert("L"), rgba.getchannel("A"))
    return picture.convert("L")


def _border_is_light(gray: Image.Image) -> bool:
    """Whether the mean of the outermost rows and columns is above mid-gray (plain bytes: for a small
    picture, torch's per-call overhead would cost more than the sums)."""
    width = gray.width
    data = gray.tobytes()
    border = data[:width] + data[-width:] + data[::width] + data[width - 1 :: width]
    return sum(border) > 127.5 * len(border)
