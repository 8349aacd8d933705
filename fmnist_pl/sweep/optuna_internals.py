"""The one private name of optuna-integration this project relies on."""

from __future__ import annotations

import optuna
from optuna_integration import PyTorchLightningPruningCallback


def trial_of(callback: PyTorchLightningPruningCallback) -> optuna.Trial:
    """The trial a pruning callback reports to (it keeps it as ``_trial`` and exposes no public name),
    to report without the prune check the callback's own ``on_validation_end`` makes."""
    return callback._trial
