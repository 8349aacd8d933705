"""The MLP and the LightningModule: shapes, loss definitions, metrics, option checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fmnist_pl.errors import ConfigError
from fmnist_pl.model import MLP
from fmnist_pl.module import FashionClassifier


def test_mlp_is_the_tutorials_network() -> None:
    net = MLP(784, (256, 128), 10)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 128), (128, 10)]
    assert sum(p.numel() for p in net.parameters()) == 235_146
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_dropout_follows_each_hidden_layer_and_only_acts_in_training() -> None:
    net = MLP(784, (256, 128), 10, dropout=0.2)
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
    logits = module(batch[0])
    smoothed, _, _ = module.model_step(batch, module.label_smoothing)
    plain, preds, targets = module.model_step(batch)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, batch[1], label_smoothing=0.1))
    torch.testing.assert_close(plain, F.cross_entropy(logits, batch[1]))
    assert not torch.isclose(smoothed, plain)
    assert torch.equal(preds, logits.argmax(1)) and torch.equal(targets, batch[1])


def test_epoch_loss_is_the_mean_over_samples_not_batches() -> None:
    module = FashionClassifier()
    preds = torch.zeros(64, dtype=torch.long)
    module._update("test", torch.tensor(1.0), preds, preds)
    module._update("test", torch.tensor(4.0), preds[:16], preds[:16])  # a short last batch
    assert module.test_loss.compute().item() == pytest.approx((64 * 1.0 + 16 * 4.0) / 80)
    module._update("train", torch.tensor([1.0, 2.0, 3.0]), preds[:6], preds[:6])  # a group of 3 batches of 2
    module._update("train", torch.tensor(10.0), preds[:1], preds[:1])
    assert module.train_loss.compute().item() == pytest.approx((2 * 1.0 + 2 * 2.0 + 2 * 3.0 + 10.0) / 7)


def test_accuracy_is_over_all_samples() -> None:
    module = FashionClassifier()
    # Class 0 right 3 of 3, class 1 right 0 of 1: micro 3/4, a per-class (macro) average would say 1/2.
    module.test_acc.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))
    assert module.test_acc.compute().item() == pytest.approx(0.75)


def test_default_optimizer_is_the_tutorials_sgd() -> None:
    optimizer = FashionClassifier().configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["momentum"] == 0


def test_scheduler_is_wired_when_given() -> None:
    module = FashionClassifier(scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    config = module.configure_optimizers()
    assert isinstance(config["lr_scheduler"], torch.optim.lr_scheduler.StepLR)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"dropout": 1.0}, "--model.dropout"),
        ({"dropout": -0.1}, "--model.dropout"),
        ({"label_smoothing": -0.5}, "--model.label_smoothing"),
        ({"hidden_sizes": []}, "--model.hidden_sizes"),
        ({"hidden_sizes": [256, 0]}, "--model.hidden_sizes"),
    ],
)
def test_out_of_range_options_are_refused_by_name(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        FashionClassifier(**kwargs)


def test_hyperparameters_are_plain_data() -> None:
    hparams = dict(FashionClassifier(dropout=0.2).hparams)
    assert hparams == {
        "hidden_sizes": (256, 128), "dropout": 0.2, "label_smoothing": 0.0, "compile_mode": "auto",
        "input_size": 784, "num_classes": 10,
    }
