"""Figures people would rather look at than read: labelled image grids and confusion matrices.

Plain matplotlib ``Figure`` objects, no pyplot: they need no display and no global state, so the
callbacks can draw them during training. The callbacks put them into TensorBoard; the ``show``
command saves or shows them.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.ft2font
import numpy as np
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure

from fmnist_pl.atomic import atomic_path
from fmnist_pl.data.sets import DataSet
from fmnist_pl.pixels import Normalization

_HANGUL_PROBE = "가"


@functools.cache
def hangul_font() -> str | None:
    """Path of a font with Hangul glyphs: a system one first (e.g. Debian's fonts-nanum), else the
    NanumGothic that the ``koreanize-matplotlib`` dependency ships; None if neither is there."""
    preferred = ("NanumGothic", "NanumBarunGothic", "Noto Sans CJK", "NanumSquare")

    def rank(path: str) -> int:
        name = Path(path).name.replace(" ", "")
        return next((i for i, wanted in enumerate(preferred) if wanted.replace(" ", "") in name), len(preferred))

    bundled = bundled_hangul_font()
    for path in [*sorted(font_manager.findSystemFonts(), key=rank), *([bundled] if bundled else [])]:
        try:
            if ord(_HANGUL_PROBE) in matplotlib.ft2font.FT2Font(path).get_charmap():
                return path
        except (RuntimeError, OSError):
            continue
    return None


def bundled_hangul_font() -> str | None:
    """NanumGothic (SIL Open Font License) from the ``koreanize-matplotlib`` wheel, or None.

    Found without importing that package: importing it restyles matplotlib for the whole process,
    and it imports ``distutils``, which Python 3.12 removed.
    """
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NanumGothic.ttf"
    return str(path) if path.is_file() else None


@functools.cache
def class_names(dataset: DataSet, lang: str) -> tuple[tuple[str, ...], str | None]:
    """The data set's class names in ``lang`` and the font file to draw them with (None: matplotlib's default).

    Korean needs a font with Hangul; without one, this warns once and falls back to English rather
    than draw empty boxes.
    """
    if lang == "ko":
        font = hangul_font()
        if font is not None:
            return dataset.names("ko"), font
        warnings.warn(
            "no font with Hangul is installed (pip install koreanize-matplotlib, or apt-get install fonts-nanum); "
            "showing English class names",
            stacklevel=2,
        )
    return dataset.names("en"), None


def to_display(images: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """Undo the normalization and clamp to [0, 1]: ``(N, 1, 28, 28)`` -> ``(N, 28, 28)`` float array."""
    return normalization.undo(images.detach().float().cpu()).clamp(0, 1).squeeze(1).numpy()


def new_figure(width: float, height: float, figure: Figure | None = None) -> Figure:
    """A fresh ``Figure`` of this size, or ``figure`` (e.g. a pyplot one, to show on screen) resized."""
    if figure is None:
        return Figure(figsize=(width, height))
    figure.set_size_inches(width, height)
    return figure


def image_grid(
    images: np.ndarray,
    captions: Sequence[str],
    font: str | None,
    columns: int = 8,
    title: str | None = None,
    figure: Figure | None = None,
) -> Figure:
    """A grid of grayscale images, each with its caption underneath.

    Drawn as one mosaic image on one axes with text below each tile: about ten times faster than
    one axes per image, which matters when the callbacks draw these during training.
    """
    count, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    gap, caption = 2, 9  # pixels between tiles, and pixels of room for each caption
    cell_h, cell_w = height + caption + gap, width + gap
    mosaic = np.ones((rows * cell_h, columns * cell_w), dtype=np.float32)  # white paper
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * cell_h, column * cell_w + gap // 2
        mosaic[top : top + height, left : left + width] = images[index]
    band = 0.4  # inches above the grid for the title, whatever the number of rows
    figure = new_figure(1.6 * columns, 1.9 * rows + (band if title else 0), figure)
    top_margin = band / figure.get_figheight() if title else 0.0
    axis = figure.add_axes((0.0, 0.0, 1.0, 1.0 - top_margin))
    axis.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    axis.axis("off")
    props = font_manager.FontProperties(fname=font, size=9) if font else font_manager.FontProperties(size=9)
    for index, text in enumerate(captions[:count]):
        row, column = divmod(index, columns)
        axis.text(
            column * cell_w + cell_w / 2, row * cell_h + height + 1, text, ha="center", va="top", fontproperties=props
        )
    if title:
        # Centred in its band: suptitle's default place is a fraction of the height, so on a tall grid
        # it would reach down into the first row.
        figure.suptitle(
            title,
            y=1.0 - top_margin / 2,
            va="center",
            fontproperties=font_manager.FontProperties(fname=font, size=12) if font else None,
        )
    return figure


def single_image(image: np.ndarray, caption: str, font: str | None, figure: Figure | None = None) -> Figure:
    """One image, its class name as the title (the tutorial's single-image view)."""
    figure = new_figure(4, 4.4, figure)
    axis = figure.subplots()
    axis.imshow(image, cmap="gray", vmin=0, vmax=1)
    axis.axis("off")
    axis.set_title(caption, fontproperties=font_manager.FontProperties(fname=font, size=14) if font else None)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: torch.Tensor, names: Sequence[str], font: str | None, title: str) -> Figure:
    """A row-normalized confusion matrix (each row: where that true class went), names on both axes."""
    counts = matrix.detach().cpu().double()
    rates = (counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    size = len(names)
    props = font_manager.FontProperties(fname=font, size=8) if font else font_manager.FontProperties(size=8)
    figure = Figure(figsize=(7.5, 6.5))
    axis = figure.subplots()
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(size), labels=names, rotation=45, ha="right", fontproperties=props)
    axis.set_yticks(range(size), labels=names, fontproperties=props)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    for row in range(size):
        for column in range(size):
            if rates[row, column] >= 0.005:
                color = "white" if rates[row, column] > 0.5 else "black"
                axis.text(column, row, f"{rates[row, column]:.2f}", ha="center", va="center", fontsize=7, color=color)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write the figure to ``path`` through a temporary file, so a crash leaves no half-written PNG."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return path
