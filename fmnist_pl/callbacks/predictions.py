"""Writes ``predict``'s results as a CSV file and prints a short summary."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from fmnist_pl import plots
from fmnist_pl.atomic import atomic_path

TOP_K = 3


class PredictionCSV(BasePredictionWriter):
    """One CSV row per image: path, predicted index, class name, probability, and the top 3.

    Args:
        output: CSV file to write; by default ``predictions.csv`` in the run folder.
        lang: Class names in English (``en``) or Korean (``ko``).
    """

    def __init__(self, output: str | None = None, lang: Literal["en", "ko"] = "en") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.lang = lang

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        if not trainer.is_global_zero:
            return
        probabilities = torch.cat([batch.float().cpu() for batch in predictions])
        data = trainer.datamodule
        paths = getattr(data, "predict_paths", None) or [f"test[{i}]" for i in range(len(probabilities))]
        names, _ = plots.class_names(self.lang)
        path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.csv"
        write_csv(path, paths, probabilities, names)
        counts = Counter(names[int(i)] for i in probabilities.argmax(1))
        summary = ", ".join(f"{name} {count}" for name, count in counts.most_common())
        print(f"wrote {path}: {len(probabilities)} images; predicted {summary}")


def write_csv(path: Path, paths: Sequence[Any], probabilities: torch.Tensor, names: Sequence[str]) -> Path:
    """The CSV, written to a temporary name and renamed, so a crash leaves no half-written file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["path", "index", "class", "probability"]
    for rank in range(1, TOP_K + 1):
        header += [f"top{rank}_class", f"top{rank}_probability"]
    writer.writerow(header)
    top_p, top_i = probabilities.topk(TOP_K, dim=1)
    for image_path, ps, idx in zip(paths, top_p.tolist(), top_i.tolist()):
        row = [str(image_path), idx[0], names[idx[0]], f"{ps[0]:.6f}"]
        for p, i in zip(ps, idx):
            row += [names[i], f"{p:.6f}"]
        writer.writerow(row)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path
