"""TensorBoard pictures and per-class numbers: sample grid, confusion matrices, mistakes, hparams."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from fmnist_pl import plots
from fmnist_pl.atomic import atomic_path
from fmnist_pl.data.sets import DataSet, normalization, of_datamodule
from fmnist_pl.errors import check_at_least
from fmnist_pl.hparams import run_hyperparameters
from fmnist_pl.pixels import Normalization


class TensorBoardFigures(Callback):
    """Puts what people would rather look at than read into TensorBoard and the run folder.

    During fit: a grid of training samples as the model sees them (after augmentation) once per
    run; per validation epoch the per-class accuracy as scalars ``val/acc_per_class/<name>`` (e.g.
    ``T-shirt-top``); every
    ``every_n_epochs`` a row-normalized confusion matrix and a grid of misclassified validation
    images titled "true → predicted"; at the end, the hparams tab with the run's hyperparameters
    and its real final ``val/acc`` (never the -1 placeholder). After test: the test confusion
    matrix, per-class precision and recall as scalars, ``confusion_matrix_test.png`` and
    ``test_report.md`` in the run folder, and ``test/acc`` in the hparams tab.

    Args:
        enabled: Switch all of it off with ``--figures.enabled false``.
        every_n_epochs: Draw the validation figures every N epochs (and at the last one); the
            per-class scalars are logged every epoch.
        max_misclassified: At most this many images in the misclassified grid.
        lang: Class names in English (``en``) or Korean (``ko``, needs a font with Hangul).
    """

    def __init__(
        self,
        enabled: bool = True,
        every_n_epochs: int = 5,
        max_misclassified: int = 32,
        lang: Literal["en", "ko"] = "en",
    ) -> None:
        super().__init__()
        self.enabled = enabled
        check_at_least("--figures.every_n_epochs", every_n_epochs, 1)
        check_at_least("--figures.max_misclassified", max_misclassified, 0)
        self.every_n_epochs = every_n_epochs
        self.max_misclassified = max_misclassified
        self.lang = lang
        self.confusion: dict[str, MulticlassConfusionMatrix] = {}
        self._mistakes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._grid_logged = False
        self.dataset: DataSet | None = None  # the run's, from its data module at setup

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.dataset = of_datamodule(trainer.datamodule)
        num_classes = pl_module.num_classes
        for split in ("val", "test"):
            self.confusion[split] = MulticlassConfusionMatrix(num_classes, validate_args=False).to(pl_module.device)
        logger = trainer.logger
        if self.enabled and logger is not None and not isinstance(logger, (TensorBoardLogger, DummyLogger)):
            rank_zero_info(
                f"figures: skipped, they need a TensorBoardLogger and this run logs with {type(logger).__name__} "
                "(per-class scalars and the test report are still written)"
            )

    # ----- fit -----------------------------------------------------------------------------

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._active(trainer) or self._grid_logged:
            return
        images, labels = batch[0], batch[1]
        names, font = plots.class_names(self.dataset, self.lang)
        count = min(32, len(labels))
        figure = plots.image_grid(
            self._display(trainer, images[:count]),
            [names[int(i)] for i in labels[:count]],
            font,
            title="training samples, after augmentation",
        )
        self._add_figure(trainer, "train/samples", figure, trainer.global_step)
        self._grid_logged = True

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("val", trainer, outputs, batch, keep_mistakes=self._draw_now(trainer))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            self._reset("val")
            return
        matrix = self.confusion["val"].compute()
        names, font = plots.class_names(self.dataset, self.lang)
        accuracy = matrix.diag() / matrix.sum(dim=1).clamp(min=1)
        for name, value in zip(tag_names(self.dataset), accuracy):
            pl_module.log(f"val/acc_per_class/{name}", value)
        if self._active(trainer) and self._draw_now(trainer):
            step = trainer.current_epoch
            figure = plots.confusion_matrix(matrix, names, font, f"validation, epoch {step}")
            self._add_figure(trainer, "val/confusion_matrix", figure, step)
            if self._mistakes:
                images, truth, predicted = (torch.cat(parts) for parts in zip(*self._mistakes))
                captions = [f"{names[int(t)]} → {names[int(p)]}" for t, p in zip(truth, predicted)]
                figure = plots.image_grid(
                    self._display(trainer, images),
                    captions,
                    font,
                    title=f"misclassified (true → predicted), epoch {step}",
                )
                self._add_figure(trainer, "val/misclassified", figure, step)
        self._reset("val")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run without validation (limit_val_batches 0) or that ended between two validations
        # reports what it has: its training figures, or nothing beyond the hyperparameters.
        if self._active(trainer):
            self._log_hparams(
                trainer,
                pl_module,
                {
                    f"hp/{name.replace('/', '_')}": float(value)
                    for name, value in trainer.callback_metrics.items()
                    if name in ("val/acc", "val/acc_best", "train/acc")
                },
            )

    # ----- test ----------------------------------------------------------------------------

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", trainer, outputs, batch, keep_mistakes=False)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        matrix = self.confusion["test"].compute()
        self._reset("test")
        names, font = plots.class_names(self.dataset, self.lang)
        precision, recall, support = per_class(matrix)
        for name, p, r in zip(tag_names(self.dataset), precision, recall):
            pl_module.log(f"test/precision_per_class/{name}", p.float())
            pl_module.log(f"test/recall_per_class/{name}", r.float())
        # Every process must ask: under DDP, Trainer.log_dir is a broadcast from rank 0.
        log_dir = trainer.log_dir
        if not trainer.is_global_zero:
            return
        figure = plots.confusion_matrix(matrix, names, font, f"test, {int(support.sum())} images")
        if log_dir is not None:
            folder = Path(log_dir)
            plots.save_png(figure, folder / "confusion_matrix_test.png")
            write_report(folder / "test_report.md", names, matrix)
        if self._active(trainer):
            self._add_figure(trainer, "test/confusion_matrix", figure, 0)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active(trainer) and "test/acc" in trainer.callback_metrics:
            self._log_hparams(trainer, pl_module, {"hp/test_acc": float(trainer.callback_metrics["test/acc"])})

    # ----- helpers -------------------------------------------------------------------------

    def _collect(self, split: str, trainer: Trainer, outputs: Any, batch: Any, keep_mistakes: bool) -> None:
        if not self.enabled or outputs is None:
            return
        images, targets = batch
        preds = outputs["preds"]
        self.confusion[split].update(preds, targets)
        room = self.max_misclassified - sum(len(t) for _, t, _ in self._mistakes)
        if keep_mistakes and room > 0 and not trainer.sanity_checking:
            wrong = (preds != targets).nonzero().flatten()[:room]
            if len(wrong):
                self._mistakes.append((images[wrong].detach(), targets[wrong], preds[wrong]))

    def _reset(self, split: str) -> None:
        self.confusion[split].reset()
        self._mistakes = []

    def _draw_now(self, trainer: Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def _active(self, trainer: Trainer) -> bool:
        return self.enabled and trainer.is_global_zero and isinstance(trainer.logger, TensorBoardLogger)

    @staticmethod
    def _add_figure(trainer: Trainer, tag: str, figure, step: int) -> None:
        trainer.logger.experiment.add_figure(tag, figure, step, close=False)
        # Drop the artists now rather than leave them to the garbage collector, whose full
        # collections would then walk them during the training steps that follow.
        figure.clear()

    @staticmethod
    def _display(trainer: Trainer, images: torch.Tensor):
        datamodule = trainer.datamodule
        return plots.to_display(images, normalization(datamodule.hparams) if datamodule else Normalization())

    @staticmethod
    def _log_hparams(trainer: Trainer, pl_module: LightningModule, metrics: dict[str, float]) -> None:
        trainer.logger.log_hyperparams(run_hyperparameters(trainer, pl_module), metrics)


def tag_names(dataset: DataSet) -> list[str]:
    """English class names fit for a TensorBoard tag ("/" would nest: T-shirt/top -> T-shirt-top)."""
    return [name.replace("/", "-") for name in dataset.names("en")]


def per_class(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class precision, recall (float64) and support (images per true class) of a confusion
    matrix with true classes in rows; a class never predicted (or never present) scores 0."""
    counts = matrix.double()
    support = counts.sum(dim=1)
    return counts.diag() / counts.sum(dim=0).clamp(min=1), counts.diag() / support.clamp(min=1), support


def write_report(path: Path, names: tuple[str, ...], matrix: torch.Tensor) -> Path:
    """A markdown table of per-class precision, recall and support, written atomically."""
    precision, recall, support = per_class(matrix.cpu())
    lines = [
        f"# Test report: {int(support.sum())} images, accuracy {matrix.diag().sum() / support.sum():.4f}",
        "",
        "| class | precision | recall | images |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {p:.4f} | {r:.4f} | {int(n)} |" for name, p, r, n in zip(names, precision, recall, support)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
