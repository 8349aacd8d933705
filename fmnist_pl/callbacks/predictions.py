"""Writes ``predict``'s results as a CSV file and prints a short summary."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tqdm import tqdm

from fmnist_pl import plots
from fmnist_pl.atomic import atomic_path
from fmnist_pl.data.image_files import Skipped
from fmnist_pl.data.sets import of_datamodule

TOP_K = 3


class PredictionCSV(BasePredictionWriter):
    """One CSV row per image: path, predicted index, class name, probability, and the top 3; then
    one row per file that could not be used, its ``skipped`` column saying why.

    Args:
        output: CSV file to write; by default ``predictions.csv`` in the run folder.
        lang: Class names in English (``en``) or Korean (``ko``).
    """

    def __init__(self, output: str | None = None, lang: Literal["en", "ko"] = "en") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.lang = lang

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Lightning's prediction loop, unlike its other loops, does not stop on SIGTERM (it would
        # run on to the end and exit 0); stop it the way the others stop, before anything is written.
        if trainer.received_sigterm:
            raise SIGTERMException
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        probabilities = torch.cat([batch.float() for batch in predictions])
        indices = self._dataset_indices(trainer, batch_indices, len(probabilities)).to(probabilities.device)
        if trainer.world_size > 1:
            probabilities, indices = gather_by_index(trainer, probabilities, indices)
        log_dir = trainer.log_dir  # asked by every process: under DDP it is a broadcast from process 0
        if not trainer.is_global_zero:
            return
        probabilities = probabilities.cpu()
        data = trainer.datamodule
        all_paths = getattr(data, "predict_paths", None)
        paths = [all_paths[i] for i in indices.tolist()] if all_paths else [f"test[{i}]" for i in indices.tolist()]
        names, _ = plots.class_names(of_datamodule(data), self.lang)
        path = Path(self.output) if self.output else Path(log_dir or ".") / "predictions.csv"
        skipped = getattr(data, "predict_skipped", [])
        write_csv(path, paths, probabilities, names, skipped)
        counts = Counter(names[int(i)] for i in probabilities.argmax(1))
        summary = ", ".join(f"{name} {count}" for name, count in counts.most_common())
        unused = f"; skipped {len(skipped)} (the CSV's skipped column says why)" if skipped else ""
        # Through tqdm, which clears a progress bar before the line and draws it again below it.
        tqdm.write(f"wrote {path}: {len(probabilities)} images; predicted {summary}{unused}", file=sys.stdout)

    @staticmethod
    def _dataset_indices(trainer: Trainer, batch_indices: Sequence[Any], count: int) -> torch.Tensor:
        """The data set index of each of this process's predictions, in order.

        Lightning records them for a DataLoader (``batch_indices``, one list per loader, one per batch);
        the tensor path's loader visits ``sampler.indices()``, this process's shard.
        """
        flat = [i for loader in batch_indices for batch in loader for i in batch]
        if len(flat) == count:
            return torch.tensor(flat, dtype=torch.long)
        loader = trainer.predict_dataloaders
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "indices") and len(sampler) == count:
            return sampler.indices()
        return torch.arange(count)


def gather_by_index(
    trainer: Trainer, probabilities: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's predictions on every process, each image once (DistributedSampler repeats a
    few to even the shards), ordered by data set index."""
    count = torch.tensor([len(indices)], device=indices.device)
    longest = int(trainer.strategy.all_gather(count).max())
    padding = longest - len(indices)
    probabilities = torch.nn.functional.pad(probabilities, (0, 0, 0, padding))
    indices = torch.nn.functional.pad(indices, (0, padding), value=-1)
    all_probabilities = trainer.strategy.all_gather(probabilities).flatten(0, 1)
    all_indices = trainer.strategy.all_gather(indices).flatten()
    order = torch.argsort(all_indices, stable=True)
    all_indices, all_probabilities = all_indices[order], all_probabilities[order]
    first = torch.ones_like(all_indices, dtype=torch.bool)
    first[1:] = all_indices[1:] != all_indices[:-1]
    keep = first & (all_indices >= 0)
    return all_probabilities[keep], all_indices[keep]


def write_csv(
    path: Path,
    paths: Sequence[Any],
    probabilities: torch.Tensor,
    names: Sequence[str],
    skipped: Sequence[Skipped] = (),
) -> Path:
    """The CSV, written to a temporary name and renamed, so a crash leaves no half-written file.

    It is UTF-8 whatever the file names: a name's bytes that are not UTF-8 (possible on Linux) are
    written as ``\\xNN`` escapes.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["path", "index", "class", "probability"]
    for rank in range(1, TOP_K + 1):
        header += [f"top{rank}_class", f"top{rank}_probability"]
    writer.writerow([*header, "skipped"])
    top_p, top_i = probabilities.topk(TOP_K, dim=1)
    for image_path, ps, idx in zip(paths, top_p.tolist(), top_i.tolist()):
        row = [_printable(image_path), idx[0], names[idx[0]], f"{ps[0]:.6f}"]
        for p, i in zip(ps, idx):
            row += [names[i], f"{p:.6f}"]
        writer.writerow([*row, ""])
    for entry in skipped:
        writer.writerow([_printable(entry.path), *[""] * (len(header) - 1), entry.reason])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _printable(path: Any) -> str:
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")
