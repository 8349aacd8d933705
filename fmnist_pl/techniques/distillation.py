"""Knowledge distillation: the student also learns from a trained teacher's softened predictions."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fmnist_pl.errors import CheckpointError
from fmnist_pl.model import FlipAveraged, output_width
from fmnist_pl.pixels import Normalization, to_unit

OPTION = "--model.teacher"
SCORING_BATCH = 2048
REMEMBERED_SCORINGS = 4  # a training set and its mirror image, for two teachers: a few MB of logits


class ScoreMemo:
    """The teacher's logits for whole image sets, remembered within one process.

    The trials of a sweep each fit from the same teacher file on the same training images; scoring
    55,000 images with the CNN takes about a minute on the CPU, so each later trial reuses the
    first one's logits. An entry is found only by the same file (path, size and modification time),
    the same device and precision, and the same pixels (a digest of their bytes), so a retrained
    teacher or another split is scored afresh; the oldest entries are dropped beyond
    ``REMEMBERED_SCORINGS``.
    """

    def __init__(self, capacity: int = REMEMBERED_SCORINGS) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(teacher: Path, network: nn.Module, pixels: torch.Tensor) -> Hashable:
        stat = teacher.stat()
        digest = hashlib.blake2b(pixels.contiguous().cpu().numpy().tobytes(), digest_size=16).hexdigest()
        dtypes = tuple(sorted({str(parameter.dtype) for parameter in network.parameters()}))
        autocast = torch.is_autocast_enabled(pixels.device.type)
        return (str(teacher.resolve()), stat.st_size, stat.st_mtime_ns, str(pixels.device), dtypes, autocast, digest)

    def get(self, key: Hashable) -> torch.Tensor | None:
        if key in self.entries:
            self.entries.move_to_end(key)
        return self.entries.get(key)

    def put(self, key: Hashable, scores: torch.Tensor) -> None:
        self.entries[key] = scores
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


SCORE_MEMO = ScoreMemo()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (Hinton et al., 2015).

    The T² keeps the term's gradients on the scale of the label loss's whatever the temperature.
    """
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


class Distillation:
    """The teacher and the distillation term of the training loss:
    ``(1 - weight) · label loss + weight · T² · KL(teacher_T || student_T)``.

    Not an ``nn.Module``, so the teacher is never a submodule of the student: it is not trained, not
    in the optimizer and not in the student's checkpoints; ``test``, ``predict`` and ``export`` never
    need its file. It is read when fit starts, by the loader the classifier hands it (
    ``fmnist_pl.trained.trained_network``: weights_only, errors naming ``--model.teacher``).

    Args:
        teacher: The teacher's checkpoint file (the command line also takes a run name's folder, and
            hands this its newest run's best checkpoint).
        temperature: Softens both distributions; above 0.
        weight: Share of the distillation term in the loss, in [0, 1].
    """

    def __init__(self, teacher: str, temperature: float, weight: float) -> None:
        self.teacher = teacher
        self.temperature = temperature
        self.weight = weight
        self.network: nn.Module | None = None
        self.path: Path | None = None
        self.student_normalization = Normalization()
        self.reused_scores = False  # whether the last scores_of_pixels came from SCORE_MEMO

    def load(
        self,
        read: Callable[[Path, str], nn.Module],
        device: torch.device,
        num_classes: int,
        student_normalization: Normalization,
    ) -> Path:
        """Read the teacher with ``read(path, option)`` (a network taking raw [0, 1] images) onto
        ``device``, frozen in eval mode; ``student_normalization`` is undone before the teacher, which
        applies its own. Returns its file."""
        self.path = Path(self.teacher)
        network = read(self.path, OPTION)
        classes = output_width(network)
        if classes != num_classes:
            raise CheckpointError(
                f"{OPTION} {self.path}: the teacher scores {classes} classes; the student has {num_classes}."
            )
        self.network = network.to(device).eval().requires_grad_(False)
        self.student_normalization = student_normalization
        return self.path

    @property
    def mirror_invariant(self) -> bool:
        """Whether the teacher scores an image and its mirror image alike: it averages over flips
        (``tta_flip``), so a mirrored image's logits need not be computed apart."""
        return isinstance(getattr(self._network(), "net", None), FlipAveraged)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch as the student sees it (normalized with the student's data settings)."""
        return self._network()(self.student_normalization.undo(images)).float()

    @torch.no_grad()
    def scores_of_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(N, classes)`` for uint8 images ``(N, 28, 28)``, a few thousand at a
        time; remembered for the rest of the process (``ScoreMemo``: the next trial of a sweep)."""
        network = self._network()
        key = SCORE_MEMO.key(self.path, network, pixels) if self.path is not None else None
        remembered = SCORE_MEMO.get(key) if key is not None else None
        self.reused_scores = remembered is not None
        if remembered is not None:
            return remembered
        parts = [
            network(to_unit(pixels[start : start + SCORING_BATCH].unsqueeze(1))).float()
            for start in range(0, len(pixels), SCORING_BATCH)
        ]
        scores = torch.cat(parts)
        if key is not None:
            SCORE_MEMO.put(key, scores)
        return scores

    def loss(
        self, label_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        """The training loss: the label loss and the distillation term, weighted."""
        term = distillation_loss(student_logits, teacher_logits, self.temperature)
        return (1 - self.weight) * label_loss + self.weight * term

    def describe(self) -> Mapping[str, Any]:
        """For the run's hyperparameters: which file taught it, and how."""
        return {
            "distillation/teacher": str(self.path or self.teacher),
            "distillation/temperature": self.temperature,
            "distillation/weight": self.weight,
        }

    def _network(self) -> nn.Module:
        if self.network is None:
            raise RuntimeError("Distillation.load() must run before the teacher scores anything")
        return self.network
