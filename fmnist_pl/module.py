"""The training system: the injected network with its loss (distillation included), metrics and optimizer wiring."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric
from torchvision.transforms import v2

from fmnist_pl.checkpoints import SafeLoading
from fmnist_pl.data.sets import normalization
from fmnist_pl.errors import ConfigError, check_at_least, check_range
from fmnist_pl.hparams import describe_factory, training_settings
from fmnist_pl.lightning_internals import restore_training_loader_state
from fmnist_pl.model import MLP, FlipAveraged, compile_network, output_width
from fmnist_pl.pixels import IMAGE_SHAPE
from fmnist_pl.techniques.distillation import Distillation
from fmnist_pl.techniques.epoch_metrics import EpochMetrics
from fmnist_pl.techniques.schedule_length import build_scheduler
from fmnist_pl.trained import trained_network

Batch = tuple[torch.Tensor, torch.Tensor]


def tutorial_sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Plain SGD with learning rate 0.01, no momentum: the tutorial's optimizer."""
    return torch.optim.SGD(params, lr=0.01)


class FashionClassifier(SafeLoading, LightningModule):
    """A FashionMNIST classifier around an injected network, trained with cross-entropy and scored with torchmetrics.

    One batch per ``training_step``, automatic optimization: every Trainer flag keeps its meaning.
    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``test/loss`` and ``test/acc``. Accuracy is over all samples (micro average). ``val/loss`` and
    ``test/loss`` are plain cross-entropy, the mean over the split, whatever ``label_smoothing`` is, so
    runs stay comparable; ``train/loss`` is the objective actually minimised. For an average of the
    weights, add Lightning's ``EMAWeightAveraging`` callback (``configs/best.yaml``). The learning
    rate is ``lr``, which Lightning's ``LearningRateFinder`` finds and sets.

    Args:
        net: The network: images ``(N, 1, 28, 28)`` in, one score per class out. The tutorial's MLP
            by default (``--model.net.hidden_sizes``, ``--model.net.dropout``); ``--model.net CNN`` for
            the convolutional teacher; any ``nn.Module`` by ``class_path``.
        label_smoothing: Label smoothing of the training loss, in [0, 1).
        mixup_alpha: Train on mixtures of two images of a batch against the same mixture of their labels,
            with the mixing weight drawn from ``Beta(alpha, alpha)`` per batch (mixup, torchvision's
            ``v2.MixUp``: each image is mixed with the one before it in the shuffled batch). 0 turns it off.
        tta_flip: Score each image and its mirror image and average the two predicted distributions
            (test-time augmentation for validation, test, predict and export; twice the inference cost).
        optimizer: Builds the optimizer from the parameters (default: SGD, lr 0.01).
        scheduler: Builds an optional learning-rate scheduler from the optimizer. OneCycleLR without
            ``total_steps`` and CosineAnnealingLR (``fmnist_pl.techniques.schedule_length``'s) without
            ``T_max`` last the whole run, however long (``--trainer.max_epochs`` alone sets it).
        scheduler_interval: Step the scheduler after every ``epoch`` or after every optimizer ``step``.
        scheduler_monitor: The logged value ``ReduceLROnPlateau`` follows (any ``train/`` or ``val/``
            scalar); epochs with no validation leave a ``val/`` one alone.
        compile_mode: How the network runs. ``auto``: ``torch.compile(mode="reduce-overhead")`` on a
            CUDA GPU that torch's compiler supports, where each step replays as CUDA graphs, and eager
            elsewhere (on the CPU compiling costs more than it saves for a model this small). ``eager``,
            ``default`` and ``reduce-overhead`` force one way everywhere (the last two through ``torch.compile``).
        teacher: Distil from this trained classifier: its checkpoint, or a run name's folder such as
            ``lightning_logs/teacher`` (the newest run's best checkpoint). Read when fit starts; its
            logits for every training image (and mirror image, with flips) are computed once then
            on the tensor path without shifts, otherwise it scores each augmented batch. None: no teacher.
        distill_temperature: Temperature T of the softened distributions; above 0.
        distill_weight: Weight of the distillation term, in [0, 1]; the label loss gets the rest.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        tta_flip: bool = False,
        optimizer: OptimizerCallable = tutorial_sgd,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        compile_mode: Literal["auto", "eager", "default", "reduce-overhead"] = "auto",
        teacher: str | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= distill_weight <= 1.0:
            raise ConfigError(f"--model.distill_weight must be in [0, 1], got {distill_weight}")
        if not distill_temperature > 0:
            raise ConfigError(f"--model.distill_temperature must be above 0, got {distill_temperature}")
        check_range("--model.label_smoothing", label_smoothing, 0.0, 1.0)
        check_at_least("--model.mixup_alpha", mixup_alpha, 0.0)
        # The factories are code, not data: they stay out of the checkpoint (which must load with
        # weights_only=True); optimization_hparams() describes them for the logs. Through the CLI the
        # network is stored as its class_path and init_args, from which Lightning rebuilds it; ignoring
        # "net", as Lightning's warning about a module argument advises, would drop those too.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Attribute 'net' is an instance of `nn.Module`")
            self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if isinstance(self.hparams.get("net"), nn.Module):
            del self.hparams["net"]  # built in Python: an object, not data; load_from_checkpoint then needs net=
        self.net = net if net is not None else MLP()
        self.num_classes = output_width(self.net)
        self.distillation = Distillation(teacher, distill_temperature, distill_weight) if teacher else None
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=self.num_classes) if mixup_alpha > 0 else None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._lr: float | None = None  # set through `lr` (the learning-rate finder): replaces the factory's
        self._compiled = False
        # Lets the model summary show layer shapes, and TensorBoardLogger(log_graph=True) trace the graph.
        self.example_input_array = torch.zeros(1, *IMAGE_SHAPE)
        self.train_metrics = EpochMetrics(self.num_classes)
        self.val_metrics = EpochMetrics(self.num_classes)
        self.test_metrics = EpochMetrics(self.num_classes)
        # Part of the checkpoint (persistent), so a resumed run keeps the best of the epochs before it.
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)
        self._validated_since_scheduler_step = False

    @staticmethod
    def logged_metrics() -> tuple[str, ...]:
        """The name of every scalar this module logs (a sweep checks its metric among them before it trains)."""
        return (
            *(f"{stage}/{name}" for stage in ("train", "val", "test") for name in EpochMetrics.NAMES),
            "val/acc_best",
        )

    @property
    def lr(self) -> float:
        """The learning rate the optimizer starts from: the optimizer's own unless set here (as Lightning's
        ``LearningRateFinder`` does; the run's hyperparameters then record it as ``optimizer/lr``)."""
        if self._lr is not None:
            return self._lr
        return self.optimizer_factory([nn.Parameter(torch.zeros(1))]).param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float(value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, num_classes)`` for images ``(N, 1, 28, 28)``: logits, or log-probabilities with
        ``tta_flip``; their softmax is the predicted distribution."""
        return self.inference_network()(images)

    def inference_network(self) -> nn.Module:
        """The network that evaluates, predicts and exports: wrapped in :class:`FlipAveraged` with ``tta_flip``."""
        return FlipAveraged(self.net) if self.hparams.tta_flip else self.net

    def configure_model(self) -> None:
        # Called by the Trainer once the device is known (only then can "auto" decide), at every fit,
        # validate, test and predict: the network is compiled at the first.
        if not self._compiled:
            self._compiled = compile_network(self.net, self.hparams.compile_mode, self.device)

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Plain cross-entropy (mean over the batch), predicted classes and targets, as evaluation scores them."""
        images, targets = batch
        scores = self(images)
        return F.cross_entropy(scores, targets), scores.argmax(dim=1), targets

    def training_step(
        self, batch: Batch | tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch[0], batch[1]
        cached_scores = getattr(batch, "teacher_scores", None)  # a TeacherScoredBatch's
        soft_targets = None
        if self.mixup is not None:
            images, soft_targets = self.mixup(images, targets)
        scores = self.net(images)
        loss = F.cross_entropy(
            scores, targets if soft_targets is None else soft_targets, label_smoothing=self.hparams.label_smoothing
        )
        if self.distillation is not None:
            # Cached scores are for the loader's images; mixed ones are scored as they are.
            cached = cached_scores is not None and self.mixup is None
            teacher_scores = cached_scores if cached else self.distillation.scores(images)
            loss = self.distillation.loss(loss, scores, teacher_scores)
        self.train_metrics.add(loss, scores.argmax(dim=1), targets)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, preds, targets = self.model_step(batch)
        self.val_metrics.add(loss, preds, targets)
        return {"preds": preds}  # for callbacks: confusion matrix, misclassified images

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, preds, targets = self.model_step(batch)
        self.test_metrics.add(loss, preds, targets)
        return {"preds": preds}

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)``."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=1)

    def on_fit_start(self) -> None:
        if self.distillation is not None:
            self._load_teacher()
        # Lightning logs the model's and data's hyperparameters; this adds the optimizer, the
        # scheduler, max_epochs and the seed, so that runs can be compared by them.
        for logger in self.loggers:
            logger.log_hyperparams(training_settings(self.trainer, self))

    def _load_teacher(self) -> None:
        datamodule = self.trainer.datamodule
        data_hparams = getattr(datamodule, "hparams", {})
        path = self.distillation.load(trained_network, self.device, self.num_classes, normalization(data_hparams))
        cache = getattr(datamodule, "cache_teacher_scores", None)
        mirror_invariant = self.distillation.mirror_invariant
        cached = bool(cache and self.mixup is None and cache(self.distillation.scores_of_pixels, mirror_invariant))
        if not cached:
            how = "scoring each batch"
        elif self.distillation.reused_scores:
            how = "its logits for the training images from an earlier fit in this process"
        else:
            how = "its logits for the training images computed once"
        rank_zero_info(f"distilling from {path} ({how})")

    def on_train_start(self) -> None:
        restore_training_loader_state(self.trainer)  # the schedule's length was read before the restore

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics)
        if self.trainer.sanity_checking:
            return  # a check of the pipeline before training (or after a resume): not an epoch's result
        self.val_acc_best(self.val_metrics.acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        self._validated_since_scheduler_step = True

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self._lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = self._lr
        if self.scheduler_factory is None:
            return optimizer
        interval = self.hparams.scheduler_interval
        scheduler = {"scheduler": build_scheduler(self.scheduler_factory, optimizer, interval, lambda: self.trainer)}
        scheduler["interval"] = interval
        if isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            # strict=False: Lightning skips the step when the value is missing (no validation yet).
            scheduler |= {"monitor": self.hparams.scheduler_monitor, "strict": False}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
            return
        if self.hparams.scheduler_monitor.startswith("val/"):
            # A val/ value from an earlier epoch is still in callback_metrics: an epoch without
            # validation must not count as one more epoch without improvement.
            if not self._validated_since_scheduler_step:
                return
            self._validated_since_scheduler_step = False
        scheduler.step(metric)

    def optimization_hparams(self) -> dict[str, Any]:
        """The optimizer and the scheduler with their arguments, the scheduler's interval, and the
        teacher (its file, temperature and weight) when distilling: flat."""
        described = describe_factory("optimizer", self.optimizer_factory) | describe_factory(
            "scheduler", self.scheduler_factory
        )
        if self._lr is not None:
            described["optimizer/lr"] = self._lr
        described |= {"scheduler/interval": self.hparams.scheduler_interval}
        return described | (dict(self.distillation.describe()) if self.distillation is not None else {})

    def _log_epoch(self, stage: str, metrics: EpochMetrics) -> None:
        # Logged once per epoch, from the epoch-end hook: Lightning computes (and, under DDP, syncs)
        # each metric object, then resets it.
        metrics.flush()
        for name in EpochMetrics.NAMES:
            self.log(f"{stage}/{name}", getattr(metrics, name), prog_bar=name == "acc" or stage != "train")
