"""The LightningDataModule: a data set's (FashionMNIST's by default) train / val / test splits and their transforms."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from fmnist_pl.data import sets
from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.device_loader import DeviceLoader
from fmnist_pl.data.epochs import EpochSampler
from fmnist_pl.data.files import ensure_files, raw_dir, read_split
from fmnist_pl.data.image_files import Invert, Skipped, find_images, load_images, warn_skipped
from fmnist_pl.data.sets import normalization
from fmnist_pl.data.torchvision_loader import TorchvisionLoader
from fmnist_pl.errors import ConfigError, check_at_least, check_range


def split_indices(total: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint train and validation indices covering ``range(total)``, fixed by ``seed``.

    The train indices come back sorted, so that an unshuffled loader walks the file in its own order
    (as the tutorial's loader does).
    """
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


class FashionMNISTDataModule(LightningDataModule):
    """FashionMNIST (or another data set of its format), offline first: train and validation from the
    training images (60,000), test from the test images (10,000).

    ``prepare_data`` finds the files (``data_dir``, then ``source_dir``, then the data set's own places:
    for FashionMNIST ``$FMNIST_DATA`` and ``/usr/share/datasets/fashion-mnist``; then torchvision's
    download) and verifies their MD5s.

    Two data paths give the same batches (every training image once per epoch, the same
    augmentations drawn alike, the same normalization, validation and test complete):
    ``loader="tensor"`` (default) decodes the files once into uint8 tensors, keeps each split on the
    training device and transforms whole batches there; ``loader="torchvision"`` is the classic
    torchvision dataset -> PIL -> tensor -> DataLoader pipeline, for comparison or for adding PIL
    transforms. Both apply :mod:`~fmnist_pl.data.augmentations` to uint8 batches.

    Args:
        dataset: Import path of the data set's descriptor (:class:`fmnist_pl.data.sets.DataSet`): its
            files, where to find them, its statistics and class names.
        data_dir: Folder for the decompressed files (``<data_dir>/FashionMNIST/raw``, torchvision's layout).
        source_dir: An extra folder holding the four files (``.gz`` or decompressed), searched before
            the data set's own places (for FashionMNIST ``$FMNIST_DATA`` and Debian's folder).
        download: Whether torchvision may download the files when no local copy is found.
        val_size: Training images held out for validation, at least 0 and fewer than the data set's
            training images (60,000 for FashionMNIST).
        split_seed: Seed of the train/validation split; independent of the training seed.
        batch_size: Images per batch, for every split; at least 1.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        shuffle: Whether to shuffle the training images each epoch.
        flip: Whether to flip training images horizontally with probability 0.5.
        shift: Largest random translation of training images, in pixels: each image moves by a whole
            number of pixels in [-shift, shift] down and across, independently, and the pixels moved
            in are black (the background). An MLP has no built-in tolerance to position; this
            teaches it some. 0 turns it off.
        normalize: Whether to normalize images (train and eval alike) with ``mean`` and ``std``.
        mean: Mean of the normalization, in units of the [0, 1] pixel scale; None: the data set's own.
        std: Standard deviation of the normalization, in the same units, above 0; None: the data set's own.
        loader: ``tensor`` (batches from tensors on the training device) or ``torchvision`` (DataLoader
            over torchvision's dataset; the only one that uses ``num_workers``).
        seed: Seed of the training order and of the augmentations (both paths); None takes the run's
            ``seed_everything``.
        predict_path: Image files for ``predict``: a file, a folder (searched recursively) or a glob;
            None predicts the test split.
        invert: ``true`` turns dark-on-light pictures (the usual photo) into FashionMNIST's
            light-on-dark, ``false`` leaves them, ``auto`` decides per image from its border.
    """

    def __init__(
        self,
        dataset: str = sets.DEFAULT,
        data_dir: str = "data",
        source_dir: str | None = None,
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 42,
        batch_size: int = 64,
        num_workers: int = 0,
        shuffle: bool = True,
        flip: bool = False,
        shift: int = 0,
        normalize: bool = True,
        mean: float | None = None,
        std: float | None = None,
        loader: Literal["tensor", "torchvision"] = "tensor",
        seed: int | None = None,
        predict_path: str | None = None,
        invert: Invert = "auto",
    ) -> None:
        super().__init__()
        self.dataset = sets.load(dataset)
        check_range("--data.val_size", val_size, 0, self.dataset.train_size)
        check_at_least("--data.batch_size", batch_size, 1)
        check_at_least("--data.num_workers", num_workers, 0)
        check_range("--data.shift", shift, 0, 14)
        if std is not None and not std > 0:
            raise ConfigError(f"--data.std must be above 0, got {std}")
        self.save_hyperparameters()
        self.augmentations = Augmentations.of(flip, shift)
        self.train_set: Dataset | TensorSplit | None = None
        self.val_set: Dataset | TensorSplit | None = None
        self.test_set: Dataset | TensorSplit | None = None
        self.data_seed: int | None = None
        self.predict_paths: list[Path] | None = None
        self.predict_skipped: list[Skipped] = []
        self.predict_set: TensorSplit | None = None
        self.teacher_scores: tuple[torch.Tensor, torch.Tensor | None] | None = None  # cache_teacher_scores

    def prepare_data(self) -> None:
        if self.hparams.predict_path is not None and self.trainer is not None and self.trainer.predicting:
            return  # predicting image files needs none of the data set's files
        ensure_files(self.hparams.data_dir, self.dataset, self.hparams.source_dir, self.hparams.download)

    def setup(self, stage: str) -> None:
        if self.data_seed is None:
            # Taken now, after seed_everything: the same run seed gives the same data order.
            seed = self.hparams.seed if self.hparams.seed is not None else torch.initial_seed() % 2**31
            # Every process must shuffle alike, or the shards would overlap: rank 0's seed wins.
            self.data_seed = self.trainer.strategy.broadcast(seed, src=0) if self.trainer is not None else seed
        tensors = self.hparams.loader == "tensor"
        if stage in ("fit", "validate") and self.train_set is None:
            if tensors:
                images, labels = self._read_split("train")
                total = len(labels)
            else:
                train_full = self._dataset(train=True)
                total = len(train_full)
            train_idx, val_idx = split_indices(total, self.hparams.val_size, self.hparams.split_seed)
            if tensors:
                self.train_set = TensorSplit(images[train_idx], labels[train_idx])
                self.val_set = TensorSplit(images[val_idx], labels[val_idx])
            else:
                self.train_set = Subset(train_full, train_idx.tolist())
                self.val_set = Subset(train_full, val_idx.tolist())
        if stage == "predict" and self.hparams.predict_path is not None:
            if self.predict_set is None:
                paths, unusable = find_images(self.hparams.predict_path)
                self.predict_paths, images, unreadable = load_images(paths, self.hparams.invert)
                self.predict_skipped = sorted(unusable + unreadable, key=lambda entry: entry.path)
                warn_skipped(self.predict_skipped)
                # The loader expects uint8 like the data set's files.
                pixels = images.squeeze(1).mul(255).round().to(torch.uint8)
                self.predict_set = TensorSplit(pixels, torch.full((len(pixels),), -1, dtype=torch.long))
            return
        if stage in ("test", "predict") and self.test_set is None:
            if tensors:
                self.test_set = TensorSplit(*self._read_split("test"))
            else:
                self.test_set = self._dataset(train=False)

    def train_dataloader(self) -> Iterable:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> Iterable:
        return self._loader(self.val_set)

    def test_dataloader(self) -> Iterable:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> Iterable:
        return self._loader(self.predict_set if self.hparams.predict_path is not None else self.test_set)

    def _dataset(self, train: bool) -> Dataset:
        """torchvision's data set, its PIL images as uint8 tensors ``(1, 28, 28)``: the loader augments
        and normalizes whole batches, as the tensor path does."""
        torchvision_class = self.dataset.torchvision_dataset()
        return torchvision_class(self.hparams.data_dir, train=train, transform=v2.PILToTensor(), download=False)

    def _read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = read_split(raw_dir(self.hparams.data_dir, self.dataset), self.dataset, split)
        return images.to(device), labels.long().to(device)

    def _loader(self, split: Dataset | TensorSplit | None, train: bool = False) -> Iterable:
        # --trainer.overfit_batches trains on the same first batches every epoch (Lightning's meaning);
        # Lightning can only switch shuffling off in a DataLoader, so it is done here for both paths.
        overfitting = self.trainer is not None and self.trainer.overfit_batches > 0
        shuffle = train and self.hparams.shuffle and not overfitting
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        augmentations = self.augmentations if train else Augmentations()
        if isinstance(split, TensorSplit):
            order = EpochSampler(
                len(split.labels), shuffle, self.data_seed, rank, world_size, even_shards=train and world_size > 1
            )
            return DeviceLoader(
                split.images,
                split.labels,
                order,
                self.hparams.batch_size,
                augmentations=augmentations,
                normalization=normalization(self.hparams),
                teacher_scores=self.teacher_scores if train else None,
            )
        # drop_last stays False everywhere: validation and test must see every image exactly once.
        workers = self.hparams.num_workers
        sampler = None
        if train and world_size == 1:
            # The same (seed, epoch) order as the tensor path, so resuming gives the same order.
            # (Under DDP Lightning puts in its DistributedSampler, itself a function of seed and epoch.)
            sampler, shuffle = EpochSampler(len(split), shuffle, self.data_seed), False
        return TorchvisionLoader(
            split,
            augmentations=augmentations,
            normalization=normalization(self.hparams),
            seed=self.data_seed,
            rank=rank,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            # The loader draws its workers' base seed when an iterator is made; from its own
            # generator, that draw leaves the global one (flips, dropout) alone.
            generator=torch.Generator().manual_seed(self.data_seed),
        )

    def cache_teacher_scores(
        self, score: Callable[[torch.Tensor], torch.Tensor], mirror_invariant: bool = False
    ) -> bool:
        """Score every training image, and its mirror image when flips are on (unless the teacher is
        ``mirror_invariant``), once with ``score`` (uint8 images ``(N, 28, 28)`` -> logits), and hand
        each training batch its images' scores.

        Only the tensor path can, with augmentations that make only stored or mirrored images
        (:attr:`Augmentations.stored_or_mirrored`). Returns False elsewhere; the teacher then scores
        each batch.
        """
        if not isinstance(self.train_set, TensorSplit) or not self.augmentations.stored_or_mirrored:
            return False
        images = self.train_set.images
        mirrored = score(images.flip(-1)) if self.augmentations.mirrors and not mirror_invariant else None
        self.teacher_scores = (score(images), mirrored)
        return True


class TensorSplit:
    """One split as tensors: uint8 images ``(N, 28, 28)`` and int64 labels ``(N,)``, on one device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)
