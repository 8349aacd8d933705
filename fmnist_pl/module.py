"""The training system: the MLP with its loss, metrics and optimizer wiring."""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fmnist_pl.checkpoints import load_checkpoint
from fmnist_pl.data.classes import IMAGE_SHAPE, INPUT_SIZE, NUM_CLASSES
from fmnist_pl.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    check_at_least,
    check_range,
)
from fmnist_pl.model import MLP, FlipAveraged

Batch = tuple[torch.Tensor, torch.Tensor]


def tutorial_sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Plain SGD with learning rate 0.01, no momentum: the tutorial's optimizer."""
    return torch.optim.SGD(params, lr=0.01)


class FashionClassifier(LightningModule):
    """An MLP classifier for FashionMNIST, trained with cross-entropy and scored with torchmetrics.

    Validation, test, predict and export all go through :meth:`inference_network`: the averaged
    weights when ``ema_decay`` is set, each image with its mirror image when ``tta_flip`` is set.

    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``test/loss`` and ``test/acc``. Accuracy is over all samples (micro average). ``val/loss`` and
    ``test/loss`` are plain cross-entropy summed over the split and divided by its size (the
    tutorial's test loss), whatever ``label_smoothing`` is, so runs stay comparable; ``train/loss``
    is the objective actually minimised.

    Args:
        hidden_sizes: Widths of the hidden layers, e.g. ``[256, 128]``.
        dropout: Probability of zeroing a hidden activation during training, in [0, 1).
        label_smoothing: Label smoothing of the training loss, in [0, 1).
        mixup_alpha: Train on mixtures of two images, ``lam * a + (1 - lam) * b`` with
            ``lam ~ Beta(alpha, alpha)`` drawn per batch and the pair taken from the batch itself, against
            the same mixture of their labels (mixup). 0 turns it off.
        ema_decay: Keep an exponential moving average of the weights, updated after every optimizer
            step: ``average = ema_decay * average + (1 - ema_decay) * weights`` (0.999 averages over
            roughly the last 1,000 steps). Validation, test, predict and export use the average;
            it is saved in the checkpoints. 0 turns it off; in [0, 1).
        tta_flip: Score each image and its mirror image and average the two predicted distributions
            (test-time augmentation; inference costs twice as much). Training is unchanged.
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
        mixup_alpha: float = 0.0,
        ema_decay: float = 0.0,
        tta_flip: bool = False,
        optimizer: OptimizerCallable = tutorial_sgd,
        scheduler: LRSchedulerCallable | None = None,
        compile_mode: Literal["auto", "eager", "default", "reduce-overhead"] = "auto",
        input_size: int = INPUT_SIZE,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        check_range("--model.dropout", dropout, 0.0, 1.0)
        check_range("--model.label_smoothing", label_smoothing, 0.0, 1.0)
        check_range("--model.ema_decay", ema_decay, 0.0, 1.0)
        check_at_least("--model.mixup_alpha", mixup_alpha, 0.0)
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ConfigError(f"--model.hidden_sizes must be a non-empty list of integers >= 1, got {list(hidden_sizes)}")
        # The optimizer and scheduler factories are code, not data: they stay out of the checkpoint
        # (which must load with weights_only=True); the run's config.yaml records them.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        # The training step runs several optimizer steps per call when batches come grouped.
        self.automatic_optimization = False
        self.net = MLP(input_size, hidden_sizes, num_classes, dropout)
        self.ema: AveragedModel | None = None
        if ema_decay > 0:
            # use_buffers=False: the MLP has no buffers. The copy's weights take no gradients.
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
            self.ema.requires_grad_(False)
        self.tta_flip = tta_flip
        # Lets TensorBoardLogger(log_graph=True) trace the model graph.
        self.example_input_array = torch.zeros(1, *IMAGE_SHAPE)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.mixup = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha > 0 else None
        self.compile_mode = compile_mode
        self._compiled = False

        # Predictions come from argmax and targets from the data set: validating them per step
        # (validate_args) would only cost time.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        # No per-step NaN check: it costs a host sync every step on a GPU. A non-finite loss
        # shows in the epoch's mean.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        # Part of the checkpoint (persistent), so a resumed run keeps the best of the epochs before it.
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)
        # Random generator states read from a checkpoint, put back when the next training epoch starts.
        self._rng_states_to_restore: dict[str, Any] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, num_classes)`` for images ``(N, 1, 28, 28)`` from :meth:`inference_network`:
        logits, or log-probabilities with ``tta_flip``; their softmax is the predicted distribution."""
        return self.inference_network()(images)

    def inference_network(self) -> nn.Module:
        """The network that evaluates and predicts: the averaged weights if ``ema_decay`` is set
        (else the trained ones), wrapped in :class:`FlipAveraged` if ``tta_flip`` is set."""
        net = self.ema.module if self.ema is not None else self.net
        return FlipAveraged(net) if self.tta_flip else net

    def configure_model(self) -> None:
        # Called by the Trainer once the device is known: only then can "auto" decide.
        mode = self.compile_mode
        if mode == "auto":
            mode = "reduce-overhead" if self.device.type == "cuda" else "eager"
            # "auto" promises to work everywhere: where compiling or capturing fails (no Triton,
            # an unsupported GPU), dynamo then runs the network eagerly instead of raising.
            torch._dynamo.config.suppress_errors = True
        if mode != "eager" and not self._compiled:
            # In place, so the state_dict keys (and checkpoints) are the same as in eager mode.
            self.net.compile(mode=mode, dynamic=False)
            self._compiled = True

    def model_step(
        self, batch: Batch, label_smoothing: float = 0.0, training: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (mean over the batch), predicted classes and targets: the part all stages share.

        Training scores with the trained network itself; evaluation with :meth:`inference_network`.
        """
        images, targets = batch
        scores = self.net(images) if training else self(images)
        loss = F.cross_entropy(scores, targets, label_smoothing=label_smoothing)
        return loss, scores.argmax(dim=1), targets

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """One optimizer step per batch; a 5-D batch ``(K, B, 1, 28, 28)`` is K batches in a row.

        Grouping batches (``--data.group_batches``) pays Lightning's per-call overhead once per group
        instead of once per batch; every batch still gets its own forward, backward and optimizer
        step, in order, so the result is the same as one batch per call.
        """
        images, targets = batch
        steps = zip(images, targets) if images.dim() == 5 else [(images, targets)]
        optimizer = self.optimizers()
        losses, predictions = [], []
        for step_images, step_targets in steps:
            if self.mixup is None:
                loss, preds, _ = self.model_step((step_images, step_targets), self.label_smoothing, training=True)
            else:
                loss, preds = self.mixup_step(step_images, step_targets)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            losses.append(loss.detach())
            predictions.append(preds)
        group_losses = torch.stack(losses)
        self._stop_unless_finite(group_losses)
        # One metric update per group: every batch in a group has the same size, so the mean of
        # the batch losses weighted by the group's size is the mean over its samples.
        self._update("train", group_losses, torch.cat(predictions), targets.flatten())
        return loss

    def mixup_step(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup: the loss on mixed images against the same mixture of the two labels, and the
        predicted classes (scored against the first image's label in ``train/acc``)."""
        lam = self.mixup.sample().to(images.device)
        partner = torch.randperm(len(targets), device=images.device)
        scores = self.net(lam * images + (1 - lam) * images[partner])
        smoothing = self.label_smoothing
        loss = lam * F.cross_entropy(scores, targets, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(
            scores, targets[partner], label_smoothing=smoothing
        )
        return loss, scores.argmax(dim=1)

    def _stop_unless_finite(self, losses: torch.Tensor) -> None:
        """Raise ``NonFiniteLossError`` naming the epoch and optimizer step if any loss is NaN or infinite.

        Checked once per ``training_step`` call (one host sync per group of batches, not per batch).
        Raising, rather than asking the trainer to stop, means no checkpoint is written after the
        failure: ``last.ckpt`` and ``best-*.ckpt`` keep the last good epoch. Under DDP every process
        takes the decision together, so none is left waiting in a collective.
        """
        finite = torch.isfinite(losses)
        local_failure = not bool(finite.all())
        failed = local_failure
        if self.trainer.world_size > 1:
            failed = self.trainer.strategy.reduce_boolean_decision(local_failure, all=False)
        if not failed:
            return
        if not local_failure:
            raise NonFiniteLossError(f"another process's training loss is not finite at epoch {self.current_epoch}; training stopped.")
        first_bad = int((~finite).nonzero()[0])
        step = self.global_step - len(losses) + first_bad
        raise NonFiniteLossError(
            f"training loss is {losses[first_bad].item()} at epoch {self.current_epoch}, step {step}; training stopped "
            "and nothing from this epoch was saved (last.ckpt and best-*.ckpt hold the last good epoch). "
            "Lower the learning rate or check the data."
        )

    def on_train_epoch_start(self) -> None:
        # Put back the generators of a resumed run here rather than when the checkpoint is read:
        # anything between the two (the sanity check, callbacks' on_fit_start, creating loaders)
        # may draw from them, and the first batch must see what it would have uninterrupted.
        if self._rng_states_to_restore is not None:
            torch.set_rng_state(self._rng_states_to_restore["torch"])
            cuda_states = self._rng_states_to_restore.get("cuda")
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
            self._rng_states_to_restore = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout (and the torchvision path's flips) draw from the global generators; without their
        # state a resumed run would take other draws than an uninterrupted one. Every process of a
        # DDP run holds the same state (seeded alike, drawing alike), so rank 0's stands for all.
        states: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_states_to_restore = checkpoint.get("rng_states")
        # Checkpoints written before val/acc_best was saved load as "no best yet".
        checkpoint["state_dict"].setdefault("val_acc_best.max_value", torch.tensor(float("-inf")))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> "FashionClassifier":
        """Lightning's ``load_from_checkpoint``, always with ``weights_only=True``.

        A file path is read first by :func:`fmnist_pl.checkpoints.load_checkpoint`, so a missing,
        truncated or code-carrying file is a one-line ``CheckpointError`` naming it.
        """
        if weights_only is False:
            raise CheckpointError(f"{checkpoint_path}: weights_only=False refused; this project loads checkpoints as plain data only.")
        if isinstance(checkpoint_path, (str, Path)):
            load_checkpoint(Path(checkpoint_path), option="checkpoint_path")
        return super().load_from_checkpoint(
            checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict, weights_only=True, **kwargs
        )

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        # Manual optimization: Lightning leaves the scheduler to us. Runs after validation, so
        # ReduceLROnPlateau can see this epoch's val/loss.
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(self.trainer.callback_metrics["val/loss"])
        elif scheduler is not None:
            scheduler.step()

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, preds, targets = self.model_step(batch)
        self._update("val", loss, preds, targets)
        return {"preds": preds}  # for callbacks: confusion matrix, misclassified images

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.trainer.sanity_checking:
            return  # a check of the pipeline before training (or after a resume): not an epoch's result
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, preds, targets = self.model_step(batch)
        self._update("test", loss, preds, targets)
        return {"preds": preds}

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)``."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=1)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        # The trained network's parameters only: the moving average is not trained.
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _update(self, stage: str, loss: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
        # ``loss`` holds one mean per batch (all of one size). Repeating each once per sample makes
        # the epoch loss the mean over samples, so a short last batch counts as much as its samples.
        # (Not ``weight=``: torchmetrics 1.9 drops the weights when nan_strategy="disable".)
        per_sample = loss.detach().repeat_interleave(targets.numel() // loss.numel())
        getattr(self, f"{stage}_loss").update(per_sample)
        getattr(self, f"{stage}_acc").update(preds, targets)

    def _log_epoch(self, stage: str) -> None:
        # Logged once per epoch, from the epoch-end hook: Lightning computes (and, under DDP, syncs)
        # each metric object, then resets it. Logging them from every step instead costs about 3 ms
        # per step in Lightning's bookkeeping, more than the step itself on a CPU.
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage != "train")
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), prog_bar=True)
