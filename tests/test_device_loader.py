"""The tensor data path: order, sharding, flips, normalization, and equality with the torchvision path."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest
import torch
from torchvision.transforms import functional as TF

from fmnist_pl.data.augmentations import Augmentations, shift_images
from fmnist_pl.data.datamodule import FashionMNISTDataModule
from fmnist_pl.data.device_loader import DeviceLoader
from fmnist_pl.data.epochs import EpochSampler
from fmnist_pl.pixels import Normalization


def numbered_images(count: int) -> torch.Tensor:
    """Images whose first pixel encodes their index, and asymmetric so a flip is visible."""
    images = torch.zeros(count, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(count) % 256
    images[:, 0, 1] = torch.arange(count) // 256
    images[:, 5, 0] = 255
    return images


def visited(loader: DeviceLoader) -> list[int]:
    out = []
    for _, labels in loader:
        out += labels.tolist()
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_exactly_once_per_epoch(shuffle: bool) -> None:
    order = EpochSampler(1000, shuffle=shuffle, seed=0)
    loader = DeviceLoader(numbered_images(1000), torch.arange(1000), order, batch_size=64)
    assert len(loader) == 16
    for epoch in range(3):
        order.set_epoch(epoch)
        seen = visited(loader)
        assert sorted(seen) == list(range(1000))
        assert (seen == list(range(1000))) is (not shuffle)


def test_same_seed_same_order_other_seed_or_epoch_other_order() -> None:
    def order_of(seed: int, epoch: int) -> torch.Tensor:
        order = EpochSampler(500, shuffle=True, seed=seed)
        order.set_epoch(epoch)
        return order.indices()

    assert torch.equal(order_of(1, 0), order_of(1, 0))
    assert not torch.equal(order_of(1, 0), order_of(2, 0))
    assert not torch.equal(order_of(1, 0), order_of(1, 1))


@pytest.mark.parametrize(("size", "world_size"), [(1000, 2), (1001, 2), (1003, 4)])
def test_training_shards_are_disjoint_and_equal(size: int, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        order = EpochSampler(size, shuffle=True, seed=5, rank=rank, world_size=world_size, even_shards=True)
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
        union += EpochSampler(size, shuffle=False, seed=0, rank=rank, world_size=world_size).indices().tolist()
    assert sorted(union) == list(range(size))


def test_flip_about_half_the_images_and_depends_on_seed_and_epoch() -> None:
    images = numbered_images(2000)
    order = EpochSampler(2000, shuffle=False, seed=11)
    loader = DeviceLoader(images, torch.arange(2000), order, batch_size=100, augmentations=Augmentations.of(flip=True))

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


def test_no_global_random_state_is_consumed() -> None:
    order = EpochSampler(300, shuffle=True, seed=1)
    loader = DeviceLoader(
        numbered_images(300), torch.arange(300), order, batch_size=64, augmentations=Augmentations.of(flip=True)
    )
    torch.manual_seed(123)
    before = torch.get_rng_state()
    visited(loader)
    assert torch.equal(before, torch.get_rng_state())


def test_normalization_and_shape() -> None:
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    loader = DeviceLoader(
        images, torch.arange(10), EpochSampler(10, False, 0), batch_size=4, normalization=Normalization(0.25, 0.5)
    )
    batch, labels = next(iter(loader))
    assert batch.shape == (4, 1, 28, 28) and batch.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(batch, (images[:4, None].float() / 255 - 0.25) / 0.5)


def both_paths(
    real_data_dir: Path, tensor: bool = True, **kwargs
) -> tuple[FashionMNISTDataModule | None, FashionMNISTDataModule]:
    """The tensor and torchvision paths' data modules, set up alike (the first None without ``tensor``)."""
    modules: list[FashionMNISTDataModule | None] = [None] if not tensor else []
    for loader in ("tensor", "torchvision")[0 if tensor else 1 :]:
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
    fast, classic = both_paths(real_data_dir, shuffle=False, normalize=False)
    fast_iter, classic_iter = iter(fast.train_dataloader()), iter(classic.train_dataloader())
    for _ in range(5):
        (fx, fy), (cx, cy) = next(fast_iter), next(classic_iter)
        assert torch.equal(fy, cy)
        torch.testing.assert_close(fx, cx)
    assert len(fast.train_dataloader()) == len(classic.train_dataloader()) == 860


def test_shift_equals_padding_then_cropping() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 28, 28), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(-3, 4, (60, 2), generator=generator)
    shifted = shift_images(images, offsets, 3)
    for image, (down, right), got in zip(images, offsets.tolist(), shifted):
        expected = TF.crop(torch.nn.functional.pad(image, (3, 3, 3, 3)), 3 - down, 3 - right, 28, 28)
        assert torch.equal(got, expected)


def test_shift_moves_training_images_by_every_offset_within_the_limit() -> None:
    images = torch.randint(1, 256, (2000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    order = EpochSampler(2000, shuffle=False, seed=3)
    loader = DeviceLoader(images, torch.arange(2000), order, batch_size=500, augmentations=Augmentations.of(shift=2))
    state = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator, like the flips
    # Every image moved by each of the 25 offsets, to find which one the loader used.
    candidates = torch.stack(
        [
            shift_images(images, torch.tensor([[down, right]]).expand(len(images), 2), 2)
            for down in range(-2, 3)
            for right in range(-2, 3)
        ]
    )
    found = []
    for shifted, labels in batches:
        pixels = (shifted[:, 0] * 255).round().to(torch.uint8)
        matches = (candidates[:, labels] == pixels).flatten(2).all(dim=2)  # (offset, image)
        assert (matches.sum(dim=0) == 1).all()
        found.append(matches.int().argmax(dim=0))
    counts = torch.bincount(torch.cat(found), minlength=25)
    assert counts.min() > 40 and counts.max() < 130  # all 25 offsets, about 80 each
    # A function of (seed, epoch): the same again, another epoch moves them otherwise.
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, loader))
    order.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], batches[0][0])


def test_a_resumed_epoch_yields_the_rest_of_the_epoch_with_the_same_augmentations() -> None:
    images, labels = numbered_images(1000), torch.arange(1000)
    whole_order, resumed_order = EpochSampler(1000, True, seed=3), EpochSampler(1000, True, seed=3)
    whole = DeviceLoader(images, labels, whole_order, batch_size=64, augmentations=Augmentations.of(flip=True, shift=2))
    resumed = DeviceLoader(
        images, labels, resumed_order, batch_size=64, augmentations=Augmentations.of(flip=True, shift=2)
    )
    whole_order.set_epoch(2)
    resumed_order.resume_at(2, 5 * 64)
    assert len(resumed) == len(whole) == 16  # Lightning counts the resumed epoch's batches on from 5
    expected, got = list(whole)[5:], list(resumed)
    assert len(got) == 11
    for (want_x, want_y), (got_x, got_y) in zip(expected, got, strict=True):
        torch.testing.assert_close(got_x, want_x)
        torch.testing.assert_close(got_y, want_y)
    resumed_order.set_epoch(3)
    whole_order.set_epoch(3)
    assert visited(resumed) == visited(whole)  # the next epoch is whole again


@pytest.mark.parametrize("shuffle", [False, True])
def test_both_paths_give_identical_augmented_training_batches(real_data_dir: Path, shuffle: bool) -> None:
    fast, classic = both_paths(real_data_dir, shuffle=shuffle, flip=True, shift=2, seed=7, batch_size=256)
    for epoch in (0, 1):
        fast_loader, classic_loader = fast.train_dataloader(), classic.train_dataloader()
        fast_loader.sampler.set_epoch(epoch)
        classic_loader.sampler.set_epoch(epoch)
        for (fx, fy), (cx, cy) in zip(islice(fast_loader, 12), islice(classic_loader, 12), strict=True):
            assert torch.equal(fy, cy)
            assert torch.equal(fx, cx)
    plain = both_paths(real_data_dir, shuffle=shuffle, seed=7, batch_size=256)[0]
    assert not torch.equal(next(iter(plain.train_dataloader()))[0], next(iter(fast.train_dataloader()))[0])


def test_the_torchvision_paths_augmentations_depend_on_seed_epoch_and_place_not_on_the_global_generator(
    real_data_dir: Path,
) -> None:
    def epoch(seed: int, epoch: int, resume_batches: int = 0) -> list[torch.Tensor]:
        data = both_paths(real_data_dir, flip=True, shift=1, seed=seed, batch_size=500, tensor=False)[1]
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        if resume_batches:
            loader.load_state_dict({"epoch": epoch, "batches_done": resume_batches})
        torch.manual_seed(resume_batches * 1000 + epoch)  # the global state differs from call to call
        before = torch.get_rng_state()
        batches = [images for images, _ in islice(loader, 6 - resume_batches)]
        assert torch.equal(torch.get_rng_state(), before)  # and is left as it was
        return batches

    first = epoch(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(epoch(0, 1), first, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(epoch(0, 1, resume_batches=3), first[3:], strict=True))
    assert not torch.equal(epoch(0, 2)[0], first[0])
    assert not torch.equal(epoch(1, 1)[0], first[0])


def test_only_flips_let_a_teacher_cache_assume_stored_or_mirrored_images() -> None:
    class Brighten:
        """An augmentation written later, knowing nothing of the cache."""

        def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
            return torch.rand(count, generator=generator) < 0.5

        def apply_(self, pixels: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
            return pixels

    assert Augmentations().stored_or_mirrored and Augmentations.of(flip=True).stored_or_mirrored
    assert not Augmentations.of(flip=True, shift=1).stored_or_mirrored
    assert not Augmentations((*Augmentations.of(flip=True).steps, Brighten())).stored_or_mirrored
    with pytest.raises(ValueError, match="stored and mirrored"):
        scores = (torch.zeros(4, 10), None)
        DeviceLoader(
            numbered_images(4),
            torch.arange(4),
            EpochSampler(4, False, 0),
            2,
            Augmentations.of(shift=1),
            teacher_scores=scores,
        )
