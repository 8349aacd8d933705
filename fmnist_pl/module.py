"""The training system: the MLP with its loss, metrics and optimizer wiring."""

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fmnist_pl.data.classes import INPUT_SIZE, NUM_CLASSES
from fmnist_pl.errors import ConfigError, check_range
from fmnist_pl.model import MLP

Batch = tuple[torch.Tensor, torch.Tensor]


def tutorial_sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Plain SGD with learning rate 0.01, no momentum: the tutorial's optimizer."""
    return torch.optim.SGD(params, lr=0.01)


class FashionClassifier(LightningModule):
    """An MLP classifier for FashionMNIST, trained with cross-entropy and scored with torchmetrics.

    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``test/loss`` and ``test/acc``. Accuracy is over all samples (micro average). ``val/loss`` and
    ``test/loss`` are plain cross-entropy summed over the split and divided by its size (the
    tutorial's test loss), whatever ``label_smoothing`` is, so runs stay comparable; ``train/loss``
    is the objective actually minimised.

    Args:
        hidden_sizes: Widths of the hidden layers, e.g. ``[256, 128]``.
        dropout: Probability of zeroing a hidden activation during training, in [0, 1).
        label_smoothing: Label smoothing of the training loss, in [0, 1).
        optimizer: Builds the optimizer from the parameters (default: SGD, lr 0.01).
        scheduler: Builds an optional learning-rate scheduler from the optimizer; stepped once per epoch.
        compile_mode: How the network runs. ``auto``: compiled with ``torch.compile(mode="reduce-overhead")``
            on CUDA, where each step replays as CUDA graphs, and eager on the CPU, where compiling costs
            more than it saves for a model this small. ``eager``, ``default`` and ``reduce-overhead``
            force one way everywhere (the last two through ``torch.compile``).
        input_size: Values per image (linked from the data module).
        num_classes: Number of classes (linked from the data module).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = tutorial_sgd,
        scheduler: LRSchedulerCallable | None = None,
        compile_mode: Literal["auto", "eager", "default", "reduce-overhead"] = "auto",
        input_size: int = INPUT_SIZE,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        check_range("--model.dropout", dropout, 0.0, 1.0)
        check_range("--model.label_smoothing", label_smoothing, 0.0, 1.0)
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ConfigError(f"--model.hidden_sizes must be a non-empty list of integers >= 1, got {list(hidden_sizes)}")
        # The optimizer and scheduler factories are code, not data: they stay out of the checkpoint
        # (which must load with weights_only=True); the run's config.yaml records them.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = MLP(input_size, hidden_sizes, num_classes, dropout)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.compile_mode = compile_mode
        self._compiled = False

        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 1, 28, 28)``."""
        return self.net(images)

    def configure_model(self) -> None:
        # Called by the Trainer once the device is known: only then can "auto" decide.
        mode = self.compile_mode
        if mode == "auto":
            mode = "reduce-overhead" if self.device.type == "cuda" else "eager"
        if mode != "eager" and not self._compiled:
            # In place, so the state_dict keys (and checkpoints) are the same as in eager mode.
            self.net.compile(mode=mode, dynamic=False)
            self._compiled = True

    def model_step(self, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (mean over the batch), predicted classes and targets: the part all stages share."""
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        return loss, logits.argmax(dim=1), targets

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, preds, targets = self.model_step(batch, self.label_smoothing)
        self._update_and_log("train", self.train_loss, self.train_acc, loss, preds, targets)
        return loss

    def on_train_start(self) -> None:
        # The sanity check ran validation on an untrained model; that must not count as a best.
        self.val_acc_best.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, preds, targets = self.model_step(batch)
        self._update_and_log("val", self.val_loss, self.val_acc, loss, preds, targets)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, preds, targets = self.model_step(batch)
        self._update_and_log("test", self.test_loss, self.test_acc, loss, preds, targets)

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)``."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=1)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}

    def _update_and_log(
        self,
        stage: str,
        loss_metric: MeanMetric,
        acc_metric: MulticlassAccuracy,
        loss: torch.Tensor,
        preds: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        # Weighting by batch size makes the epoch loss the mean over samples, not over batches,
        # so a short last batch counts exactly as much as its samples.
        loss_metric.update(loss.detach(), weight=targets.numel())
        acc_metric.update(preds, targets)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
