"""The MLP and the LightningModule: shapes, loss definitions, metrics, option checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fmnist_pl.errors import ConfigError
from fmnist_pl.model import CNN, MLP
from fmnist_pl.module import FashionClassifier
from fmnist_pl.techniques.epoch_metrics import EpochMetrics


def test_mlp_is_the_tutorials_network() -> None:
    net = MLP()
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 128), (128, 10)]
    assert sum(p.numel() for p in net.parameters()) == 235_146
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_dropout_follows_each_hidden_layer_and_only_acts_in_training() -> None:
    net = MLP((256, 128), dropout=0.2)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    images = torch.rand(4, 1, 28, 28)
    net.eval()
    assert torch.equal(net(images), net(images))
    net.train()
    assert not torch.equal(net(images), net(images))


def test_label_smoothing_changes_the_training_loss_only() -> None:
    torch.manual_seed(0)
    module = FashionClassifier(label_smoothing=0.1)
    batch = (torch.rand(8, 1, 28, 28), torch.arange(8) % 10)
    logits = module.net(batch[0])
    smoothed = module.training_step(batch, 0)
    plain, preds, targets = module.model_step(batch)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, batch[1], label_smoothing=0.1))
    torch.testing.assert_close(plain, F.cross_entropy(logits, batch[1]))
    assert not torch.isclose(smoothed, plain)
    assert torch.equal(preds, logits.argmax(1)) and torch.equal(targets, batch[1])


def test_epoch_loss_is_the_mean_over_samples_not_batches() -> None:
    metrics = EpochMetrics(10)
    preds = torch.zeros(64, dtype=torch.long)
    metrics.add(torch.tensor(1.0), preds, preds)
    metrics.add(torch.tensor(4.0), preds[:16], preds[:16])  # a short last batch
    assert metrics.loss.update_count == 0  # nothing computed until the flush
    metrics.flush()
    assert metrics.loss.compute().item() == pytest.approx((64 * 1.0 + 16 * 4.0) / 80)
    metrics.add(torch.tensor(10.0), preds[:1], preds[:1])
    metrics.flush()  # a second flush adds to the first
    assert metrics.loss.compute().item() == pytest.approx((64 * 1.0 + 16 * 4.0 + 10.0) / 81)
    assert metrics.acc.compute().item() == 1.0


def test_accuracy_is_over_all_samples() -> None:
    module = FashionClassifier()
    # Class 0 right 3 of 3, class 1 right 0 of 1: micro 3/4, a per-class (macro) average would say 1/2.
    module.test_metrics.acc.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))
    assert module.test_metrics.acc.compute().item() == pytest.approx(0.75)


def test_default_optimizer_is_the_tutorials_sgd() -> None:
    optimizer = FashionClassifier().configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["momentum"] == 0


def test_scheduler_is_wired_when_given() -> None:
    module = FashionClassifier(scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    config = module.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert config["lr_scheduler"]["interval"] == "epoch"
    stepped = FashionClassifier(
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1), scheduler_interval="step"
    )
    assert stepped.configure_optimizers()["lr_scheduler"]["interval"] == "step"
    plateau = FashionClassifier(
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt), scheduler_monitor="train/loss"
    ).configure_optimizers()["lr_scheduler"]
    assert plateau["monitor"] == "train/loss" and plateau["strict"] is False


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: MLP(dropout=1.0), "MLP: dropout"),
        (lambda: MLP(dropout=-0.1), "MLP: dropout"),
        (lambda: MLP(hidden_sizes=[]), "MLP: hidden_sizes"),
        (lambda: MLP(hidden_sizes=[256, 0]), "MLP: hidden_sizes"),
        (lambda: CNN(channels=[8, 0]), "CNN: channels"),
        (lambda: FashionClassifier(label_smoothing=-0.5), "--model.label_smoothing"),
        (lambda: FashionClassifier(mixup_alpha=-0.1), "--model.mixup_alpha"),
    ],
)
def test_out_of_range_options_are_refused_by_name(build, option: str) -> None:
    """The classifier's options by their command-line names; a network's arguments by its own (it knows
    no command line; the CLI names the option, ``--model.net.dropout``, tested in test_cli)."""
    with pytest.raises(ConfigError, match=option):
        build()


def test_the_number_of_classes_comes_from_the_network() -> None:
    module = FashionClassifier(net=MLP(hidden_sizes=[8], num_classes=5), mixup_alpha=0.2)
    assert module.num_classes == 5 and module.mixup.num_classes == 5
    assert module.val_metrics.acc.num_classes == 5
    assert FashionClassifier(net=CNN(channels=[4], hidden_sizes=[8], num_classes=3)).num_classes == 3


def test_hyperparameters_are_plain_data() -> None:
    # Built in Python, the network is an object: it stays out of the hyperparameters (through the
    # command line they hold its class_path and init_args instead, as the checkpoint tests read).
    hparams = dict(FashionClassifier(net=MLP(dropout=0.2)).hparams)
    assert hparams == {
        "label_smoothing": 0.0,
        "mixup_alpha": 0.0,
        "tta_flip": False,
        "scheduler_interval": "epoch",
        "scheduler_monitor": "val/loss",
        "compile_mode": "auto",
        "teacher": None,
        "distill_temperature": 4.0,
        "distill_weight": 0.5,
    }


def test_flip_averaging_averages_the_two_distributions_at_evaluation_only() -> None:
    torch.manual_seed(0)
    model = FashionClassifier(tta_flip=True).eval()
    images = torch.rand(6, 1, 28, 28)
    expected = (model.net(images).softmax(1) + model.net(images.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(model(images).exp(), expected)
    # A mirror-symmetric image gives the plain prediction.
    symmetric = images + images.flip(-1)
    torch.testing.assert_close(model(symmetric), model.net(symmetric).log_softmax(1))
    labels = torch.arange(6)
    loss, preds, _ = model.model_step((images, labels))
    torch.testing.assert_close(loss, F.nll_loss(expected.log(), labels))
    assert torch.equal(preds, expected.argmax(1))
    trained_loss = model.train().training_step((images, labels), 0)  # training scores the plain network
    torch.testing.assert_close(trained_loss, F.cross_entropy(model.net(images), labels))


def test_mixup_trains_on_mixed_images_against_the_same_mixture_of_labels() -> None:
    model = FashionClassifier(mixup_alpha=0.4, label_smoothing=0.1)
    images, targets = torch.rand(8, 1, 28, 28), torch.arange(8)
    torch.manual_seed(1)
    loss = model.training_step((images, targets), 0)
    torch.manual_seed(1)  # the same draws again, by hand
    # torchvision's MixUp: one weight a batch, each image mixed with the one before it.
    lam, partner = (
        float(torch.distributions.Beta(torch.tensor([0.4]), torch.tensor([0.4])).sample(())),
        torch.arange(8).roll(1),
    )
    assert 0 < lam < 1 and not torch.equal(partner, torch.arange(8))
    scores = model.net(lam * images + (1 - lam) * images[partner])
    expected = lam * F.cross_entropy(scores, targets, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(
        scores, targets[partner], label_smoothing=0.1
    )
    torch.testing.assert_close(loss, expected)
    model.train_metrics.flush()  # train/acc scores the mixed images against the first image's label
    assert model.train_metrics.acc.compute().item() == pytest.approx(
        (scores.argmax(1) == targets).float().mean().item()
    )
    assert FashionClassifier().mixup is None  # off by default
