"""What the project knows of a data set: one descriptor each, and FashionMNIST's.

Everything that depends on which data set a run uses reads it from its :class:`DataSet`: the files
and their checksums, where local copies lie, the torchvision class that downloads it, the pixel
statistics and the class names. The data module holds the descriptor (``--data.dataset``, the import
path of one) and the checkpoint stores that path, so the figures, ``predict``, ``export`` and
``serve`` name a run's classes as its data set does.

Another data set of 28x28 gray images in MNIST's IDX format is one more descriptor, in any module::

    MNIST = DataSet(
        name="MNIST",  # the folder under --data.data_dir, as torchvision's class names it
        files=idx_files(train_images="<md5>", train_labels="<md5>", test_images="<md5>", test_labels="<md5>"),
        torchvision_class="torchvision.datasets.MNIST",
        train_size=60_000,
        mean=0.1307, std=0.3081,
        class_names={"en": tuple("0123456789")},
    )

and ``--data.dataset mypackage.sets.MNIST`` (the MD5s are those of the decompressed files,
``md5sum`` after ``gunzip``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist_pl.errors import ConfigError
from fmnist_pl.pixels import Normalization

SPLITS = ("train", "test")


@dataclass(frozen=True)
class IdxFile:
    """One of the data set's files: its name without ``.gz`` and the MD5 of its decompressed bytes."""

    name: str
    md5: str


def idx_files(
    train_images: str, train_labels: str, test_images: str, test_labels: str
) -> dict[str, tuple[IdxFile, ...]]:
    """The four files under MNIST's names, from the MD5s of their decompressed bytes: split -> (images, labels)."""
    return {
        "train": (IdxFile("train-images-idx3-ubyte", train_images), IdxFile("train-labels-idx1-ubyte", train_labels)),
        "test": (IdxFile("t10k-images-idx3-ubyte", test_images), IdxFile("t10k-labels-idx1-ubyte", test_labels)),
    }


@dataclass(frozen=True, eq=False)  # equal only to itself, so hashable with its dicts inside
class DataSet:
    """A data set of 28x28 gray images with integer labels, as IDX files (MNIST's format).

    Args:
        name: Its name, and the folder its decompressed files go in: ``<data_dir>/<name>/raw``
            (torchvision's layout).
        files: The images and labels file of each split, ``train`` and ``test``.
        torchvision_class: Import path of the torchvision data set that downloads and reads it.
        train_size: Images in its training split (validation is held out of them).
        mean: Mean of its training images on the [0, 1] scale (the default normalization).
        std: Their standard deviation.
        class_names: The class names in label order, per language code; ``en`` is required.
        env_var: An environment variable that may name a folder holding the files.
        local_dirs: Folders searched for copies (``.gz`` or decompressed), after ``env_var``'s.
        install_hint: How to get local copies, for the error when there are none.
    """

    name: str
    files: Mapping[str, tuple[IdxFile, ...]]
    torchvision_class: str
    train_size: int
    mean: float
    std: float
    class_names: Mapping[str, tuple[str, ...]]
    env_var: str | None = None
    local_dirs: tuple[Path, ...] = ()
    install_hint: str = field(default="")

    @property
    def num_classes(self) -> int:
        return len(self.class_names["en"])

    def all_files(self) -> tuple[IdxFile, ...]:
        return tuple(idx_file for split in SPLITS for idx_file in self.files[split])

    def names(self, lang: str) -> tuple[str, ...]:
        """The class names in ``lang``, or in English where it has none in that language."""
        return self.class_names.get(lang, self.class_names["en"])

    def search_dirs(self, first: str | os.PathLike | None = None) -> list[Path]:
        """Folders searched for local copies: ``first``, then the environment variable's, then ``local_dirs``."""
        dirs = [Path(first)] if first else []
        if self.env_var and os.environ.get(self.env_var):
            dirs.append(Path(os.environ[self.env_var]))
        return [*dirs, *self.local_dirs]

    def torchvision_dataset(self) -> type:
        """The torchvision class that downloads and reads it."""
        module, _, name = self.torchvision_class.rpartition(".")
        return getattr(importlib.import_module(module), name)


FASHION_MNIST = DataSet(
    name="FashionMNIST",
    files=idx_files(
        train_images="f4a8712d7a061bf5bd6d2ca38dc4d50a",
        train_labels="9018921c3c673c538a1fc5bad174d6f9",
        test_images="8181f5470baa50b63fa0f6fddb340f0a",
        test_labels="15d484375f8d13e6eb1aabb0c3f46965",
    ),
    torchvision_class="torchvision.datasets.FashionMNIST",
    train_size=60_000,
    # Of the 60,000 training images scaled to [0, 1].
    mean=0.2860,
    std=0.3530,
    class_names={
        "en": (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        # The tutorial's own names, in label order.
        "ko": ("티셔츠/윗옷", "바지", "스웨터", "드레스", "코트", "샌들", "셔츠", "운동화", "가방", "앵클부츠"),
    },
    env_var="FMNIST_DATA",
    local_dirs=(Path("/usr/share/datasets/fashion-mnist"),),  # Debian's dataset-fashion-mnist
    install_hint="`apt-get install -y dataset-fashion-mnist`",
)

DEFAULT = "fmnist_pl.data.sets.FASHION_MNIST"


def load(path: str, option: str = "--data.dataset") -> DataSet:
    """The descriptor at import path ``path`` (``package.module.NAME``); a ``ConfigError`` naming ``option`` if none."""
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{option} {path}: no such data set descriptor ({err}); give e.g. {DEFAULT}") from None
    if not isinstance(found, DataSet):
        raise ConfigError(
            f"{option} {path}: not a DataSet descriptor (fmnist_pl.data.sets.DataSet); give e.g. {DEFAULT}"
        )
    return found


def of_hparams(hparams: Mapping[str, Any]) -> DataSet:
    """The data set a data module with these hyperparameters (or a checkpoint's) reads: FashionMNIST
    for checkpoints written before the option existed."""
    return load(hparams.get("dataset") or DEFAULT)


def normalization(hparams: Mapping[str, Any]) -> Normalization:
    """The normalization a data module with these hyperparameters applies.

    The one place for this rule: the data module, the figures (to undo it for display), export (to
    fold it into the model) and distillation (to hand the teacher raw images) all ask here. A mean or
    standard deviation missing or None is the data set's own, so a checkpoint that stored only some
    of them means what it meant when it was written.
    """
    if not hparams.get("normalize", True):
        return Normalization()
    dataset = of_hparams(hparams)
    mean, std = hparams.get("mean"), hparams.get("std")
    return Normalization(dataset.mean if mean is None else mean, dataset.std if std is None else std)


def of_datamodule(datamodule: Any) -> DataSet:
    """The data set a Trainer's data module reads (FashionMNIST where it has no descriptor or there is none)."""
    return getattr(datamodule, "dataset", None) or of_hparams({})
