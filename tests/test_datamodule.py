"""The data module on the real FashionMNIST files: splits, transforms, loaders, option checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.data.datamodule import FashionMNISTDataModule, split_indices
from fmnist_pl.data.sets import FASHION_MNIST
from fmnist_pl.errors import ConfigError

LOADERS = ("tensor", "torchvision")


def make(real_data_dir: Path, loader: str = "torchvision", **kwargs) -> FashionMNISTDataModule:
    data = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False, loader=loader, **kwargs)
    data.prepare_data()
    return data


def test_split_is_disjoint_complete_and_fixed_by_its_seed() -> None:
    train, val = split_indices(1000, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
    again_train, again_val = split_indices(1000, 100, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_indices(1000, 100, seed=4)[1])
    assert torch.equal(train, train.sort().values)


@pytest.mark.slow
def test_tensor_loaders_cover_every_image_once(real_data_dir: Path) -> None:
    data = make(real_data_dir, "tensor", val_size=5000, batch_size=64)
    data.setup("fit")
    data.setup("test")
    assert len(data.train_set) == 55000
    counts = {}
    for name, batches in (
        ("train", data.train_dataloader()),
        ("val", data.val_dataloader()),
        ("test", data.test_dataloader()),
    ):
        counts[name] = sum(targets.numel() for _, targets in batches)
    assert counts == {"train": 55000, "val": 5000, "test": 10000}


def drawn_indices(loader: torch.utils.data.DataLoader) -> list[int]:
    """The data set indices a DataLoader's batches hold, read from its batch sampler without loading
    an image: the PIL path's transforms over all 70,000 would cost about 20 s on a 2-core CPU."""
    return [index for batch in loader.batch_sampler for index in batch]


@pytest.mark.parametrize("flip", [False, True])
def test_torchvision_loaders_draw_every_image_once(real_data_dir: Path, flip: bool) -> None:
    data = make(real_data_dir, "torchvision", val_size=5000, batch_size=64, shuffle=True, flip=flip)
    data.setup("fit")
    data.setup("test")
    train, val = drawn_indices(data.train_dataloader()), drawn_indices(data.val_dataloader())
    assert sorted(train) == list(range(55000)) and sorted(val) == list(range(5000))
    assert train != sorted(train)  # shuffled
    # Through the two subsets: each of the 60,000 training-file images in exactly one split.
    files = [data.train_set.indices[i] for i in train] + [data.val_set.indices[i] for i in val]
    assert sorted(files) == list(range(60000))
    assert sorted(drawn_indices(data.test_dataloader())) == list(range(10000)) == list(range(len(data.test_set)))


def first_batches(data: FashionMNISTDataModule) -> dict[str, torch.Tensor]:
    """The first batch of images of every split's loader."""
    return {name: next(iter(getattr(data, f"{name}_dataloader")()))[0] for name in ("train", "val", "test")}


@pytest.mark.parametrize("loader", LOADERS)
def test_normalization_is_applied_to_train_and_eval_alike(real_data_dir: Path, loader: str) -> None:
    batches = []
    for normalize in (False, True):
        data = make(real_data_dir, loader, normalize=normalize, shuffle=False, batch_size=32)
        data.setup("fit")
        data.setup("test")
        batches.append(first_batches(data))
    raw, normed = batches
    for name in ("train", "val", "test"):
        assert raw[name].min() >= 0 and raw[name].max() <= 1 and raw[name].max() > 0.9
        torch.testing.assert_close(normed[name], (raw[name] - FASHION_MNIST.mean) / FASHION_MNIST.std)


@pytest.mark.parametrize("loader", LOADERS)
def test_flip_touches_only_training_images_about_half_the_time(real_data_dir: Path, loader: str) -> None:
    flipped_data, plain_data = (
        make(real_data_dir, loader, flip=flip, normalize=False, shuffle=False, batch_size=400) for flip in (True, False)
    )
    for data in (flipped_data, plain_data):
        data.setup("fit")
        data.setup("test")
    augmented, plain = first_batches(flipped_data), first_batches(plain_data)
    symmetric = torch.tensor([torch.equal(image, image.flip(-1)) for image in plain["train"]])
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(augmented["train"], plain["train"])])
    same = torch.tensor([torch.equal(a, b) for a, b in zip(augmented["train"], plain["train"])])
    assert bool((mirrored | same).all()) and 150 < int((mirrored & ~symmetric).sum()) < 250
    assert torch.equal(augmented["val"], plain["val"]) and torch.equal(augmented["test"], plain["test"])


@pytest.mark.parametrize("loader", LOADERS)
def test_unshuffled_training_walks_the_file_in_order(real_data_dir: Path, loader: str) -> None:
    data = make(real_data_dir, loader, shuffle=False, val_size=0, batch_size=10)
    data.setup("fit")
    first_batch = next(iter(data.train_dataloader()))[1]
    assert first_batch.tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the first ten labels of train-labels-idx1-ubyte


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"val_size": 60000}, "--data.val_size"),
        ({"val_size": -1}, "--data.val_size"),
        ({"batch_size": 0}, "--data.batch_size"),
        ({"num_workers": -2}, "--data.num_workers"),
        ({"std": 0.0}, "--data.std"),
        ({"shift": 14}, "--data.shift"),
    ],
)
def test_out_of_range_options_are_refused_by_name(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        FashionMNISTDataModule(**kwargs)
