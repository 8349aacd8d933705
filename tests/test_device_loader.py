"""The tensor data path: order, sharding, flips, normalization, and equality with the torchvision path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_pl.data.datamodule import FashionMNISTDataModule
from fmnist_pl.data.device_loader import DeviceLoader, EpochOrder


def numbered_images(count: int) -> torch.Tensor:
    """Images whose first pixel encodes their index, and asymmetric so a flip is visible."""
    images = torch.zeros(count, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(count) % 256
    images[:, 0, 1] = torch.arange(count) // 256
    images[:, 5, 0] = 255
    return images


def visited(loader: DeviceLoader) -> list[int]:
    out = []
    for images, labels in loader:
        out += labels.tolist()
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_exactly_once_per_epoch(shuffle: bool) -> None:
    order = EpochOrder(1000, shuffle=shuffle, seed=0)
    loader = DeviceLoader(numbered_images(1000), torch.arange(1000), order, batch_size=64)
    assert len(loader) == 16
    for epoch in range(3):
        order.set_epoch(epoch)
        seen = visited(loader)
        assert sorted(seen) == list(range(1000))
        assert (seen == list(range(1000))) is (not shuffle)


def test_same_seed_same_order_other_seed_or_epoch_other_order() -> None:
    def order_of(seed: int, epoch: int) -> torch.Tensor:
        order = EpochOrder(500, shuffle=True, seed=seed)
        order.set_epoch(epoch)
        return order.indices()

    assert torch.equal(order_of(1, 0), order_of(1, 0))
    assert not torch.equal(order_of(1, 0), order_of(2, 0))
    assert not torch.equal(order_of(1, 0), order_of(1, 1))


@pytest.mark.parametrize(("size", "world_size"), [(1000, 2), (1001, 2), (1003, 4)])
def test_training_shards_are_disjoint_and_equal(size: int, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        order = EpochOrder(size, shuffle=True, seed=5, rank=rank, world_size=world_size, even_shards=True)
        order.set_epoch(3)
        shards.append(order.indices().tolist())
        assert len(order) == len(shards[-1])
    assert len({len(s) for s in shards}) == 1
    union = [i for shard in shards for i in shard]
    assert len(union) == len(set(union)) == size - size % world_size


@pytest.mark.parametrize(("size", "world_size"), [(10000, 2), (5001, 2), (7, 4)])
def test_evaluation_shards_cover_every_index_once(size: int, world_size: int) -> None:
    union = []
    for rank in range(world_size):
        union += EpochOrder(size, shuffle=False, seed=0, rank=rank, world_size=world_size).indices().tolist()
    assert sorted(union) == list(range(size))


def test_flip_about_half_the_images_and_depends_on_seed_and_epoch() -> None:
    images = numbered_images(2000)
    order = EpochOrder(2000, shuffle=False, seed=11)
    loader = DeviceLoader(images, torch.arange(2000), order, batch_size=100, flip=True)

    def flipped_mask() -> torch.Tensor:
        batches = torch.cat([batch for batch, _ in loader])
        is_flipped = torch.tensor([torch.equal(b[0], images[i].flip(-1).float() / 255) for i, b in enumerate(batches)])
        not_flipped = torch.tensor([torch.equal(b[0], images[i].float() / 255) for i, b in enumerate(batches)])
        assert torch.all(is_flipped ^ not_flipped)
        return is_flipped

    first = flipped_mask()
    assert 900 < int(first.sum()) < 1100
    assert torch.equal(first, flipped_mask())  # same (seed, epoch): same flips
    order.set_epoch(1)
    assert not torch.equal(first, flipped_mask())


@pytest.mark.parametrize(("size", "group"), [(1000, 4), (1000, 16), (1024, 8), (50, 4)])
def test_groups_hold_the_same_batches_in_the_same_order(size: int, group: int) -> None:
    def batches(group: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = EpochOrder(size, shuffle=True, seed=2)
        order.set_epoch(1)
        loader = DeviceLoader(numbered_images(size), torch.arange(size), order, 64, flip=True, mean=0.5, std=0.5, group=group)
        out = []
        for images, labels in loader:
            out += list(zip(images, labels)) if images.dim() == 5 else [(images, labels)]
        assert len(loader) == len(list(loader))
        return out

    plain, grouped = batches(1), batches(group)
    assert len(plain) == len(grouped) == -(-size // 64)
    for (px, py), (gx, gy) in zip(plain, grouped, strict=True):
        assert torch.equal(px, gx) and torch.equal(py, gy)


def test_no_global_random_state_is_consumed() -> None:
    order = EpochOrder(300, shuffle=True, seed=1)
    loader = DeviceLoader(numbered_images(300), torch.arange(300), order, batch_size=64, flip=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    visited(loader)
    assert torch.equal(before, torch.get_rng_state())


def test_normalization_and_shape() -> None:
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.arange(10), EpochOrder(10, False, 0), batch_size=4, mean=0.25, std=0.5)
    batch, labels = next(iter(loader))
    assert batch.shape == (4, 1, 28, 28) and batch.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(batch, (images[:4, None].float() / 255 - 0.25) / 0.5)


def both_paths(real_data_dir: Path, **kwargs) -> tuple[FashionMNISTDataModule, FashionMNISTDataModule]:
    modules = []
    for loader in ("tensor", "torchvision"):
        data = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False, loader=loader, **kwargs)
        data.prepare_data()
        data.setup("fit")
        data.setup("test")
        modules.append(data)
    return modules[0], modules[1]


def test_evaluation_batches_equal_the_torchvision_paths(real_data_dir: Path) -> None:
    fast, classic = both_paths(real_data_dir, batch_size=1000)
    for name in ("val_dataloader", "test_dataloader"):
        fast_batches = list(getattr(fast, name)())
        classic_batches = list(getattr(classic, name)())
        assert sum(len(y) for _, y in fast_batches) == sum(len(y) for _, y in classic_batches)
        for (fx, fy), (cx, cy) in zip(fast_batches, classic_batches, strict=True):
            assert torch.equal(fy, cy)
            torch.testing.assert_close(fx, cx)


def test_unshuffled_training_batches_equal_the_torchvision_paths(real_data_dir: Path) -> None:
    fast, classic = both_paths(real_data_dir, shuffle=False, normalize=False, group_batches=1)
    fast_iter, classic_iter = iter(fast.train_dataloader()), iter(classic.train_dataloader())
    for _ in range(5):
        (fx, fy), (cx, cy) = next(fast_iter), next(classic_iter)
        assert torch.equal(fy, cy)
        torch.testing.assert_close(fx, cx)
    assert len(fast.train_dataloader()) == len(classic.train_dataloader()) == 860
