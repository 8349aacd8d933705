"""What the service says about the model it serves: which checkpoint (name, SHA-256, the run's
``val/acc``), the network and its classes, and a dozen test images a person can try it on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from fmnist_pl.data import sets
from fmnist_pl.data.files import ensure_files, read_split
from fmnist_pl.errors import DataError
from fmnist_pl.lightning_internals import model_checkpoint_states
from fmnist_pl.serve.pictures import Picture

SHA256_PREFIX = 12
EXAMPLES = 12


def identity(path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint file's name, the first hex digits of its SHA-256, and the ``val/acc`` its run
    had measured when it was written (None for a run without validation)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint": path.name, "sha256": digest.hexdigest()[:SHA256_PREFIX], "val_acc": _val_acc(checkpoint)}


def info(path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``GET /info``'s ``model`` part: the identity, the classes, the network's config and the input rule."""
    model_hparams = checkpoint.get("hyper_parameters", {})
    data_hparams = checkpoint.get("datamodule_hyper_parameters", {})
    stats = sets.normalization(data_hparams)
    card = {
        **identity(path, checkpoint),
        "classes": {lang: list(names) for lang, names in class_names(checkpoint).items()},
        "network": model_hparams.get("net"),
        "tta_flip": bool(model_hparams.get("tta_flip", False)),
        "input": {"shape": [1, 28, 28], "normalization": {"mean": stats.mean, "std": stats.std}},
    }
    return json.loads(json.dumps(card, default=str))  # LitServe refuses metadata that is not JSON


def class_names(checkpoint: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The class names of the checkpoint's data set in the page's two languages (English where it has no Korean)."""
    dataset = sets.of_hparams(checkpoint.get("datamodule_hyper_parameters", {}))
    return {lang: dataset.names(lang) for lang in ("en", "ko")}


def examples(checkpoint: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """A dozen test images (the first of each class, then the next ones), each with its true class;
    and, when the test split cannot be found without downloading it, why there are none."""
    data_hparams = checkpoint.get("datamodule_hyper_parameters", {})
    dataset = sets.of_hparams(data_hparams)
    try:
        folder = ensure_files(
            data_hparams.get("data_dir", "data"),
            dataset,
            data_hparams.get("source_dir"),
            download=False,
            files=dataset.files["test"],
        )
    except DataError as err:
        return [], str(err)
    images, labels = read_split(folder, dataset, "test")
    names = class_names(checkpoint)
    firsts = [int(found[0]) for label in range(dataset.num_classes) if len(found := (labels == label).nonzero())]
    others = [index for index in range(len(labels)) if index not in firsts][: EXAMPLES - len(firsts)]
    chosen = sorted(firsts + others)
    return [_example(index, images[index], int(labels[index]), names) for index in chosen], None


def _example(index: int, image: torch.Tensor, label: int, names: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    return {
        "test_index": index,
        "label": label,
        **{lang: names_in[label] for lang, names_in in names.items()},
        "png_base64": Picture.from_pixels(image.numpy().tobytes()).png_base64,
    }


def _val_acc(checkpoint: dict[str, Any]) -> float | None:
    for state in model_checkpoint_states(checkpoint):
        if state.get("monitor") == "val/acc" and state.get("current_score") is not None:
            return round(float(state["current_score"]), 6)
    return None
