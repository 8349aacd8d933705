"""A sweep file: the base config, the search space over CLI options, the objective, sampler and pruner.

Example (``configs/sweeps/fast.yaml``)::

    base_config: configs/fast.yaml
    metric: val/acc            # a validation metric the run logs; maximized unless direction: minimize
    n_trials: 40               # finished trials (complete or pruned) the study ends with
    seed: 0                    # TPE's seed
    pruner: median             # median, successive_halving or none; fed every validation
    pruner_startup_trials: 4   # the median pruner prunes nothing before this many trials finished
    pruner_warmup_epochs: 0    # nor in a trial's first epochs (its epochs 0 .. N-1)
    space:
      model.optimizer.init_args.weight_decay: {low: 0.001, high: 0.2, log: true}
      model.label_smoothing: {low: 0.0, high: 0.2}
      trainer.max_epochs: {low: 6, high: 10}            # whole numbers: an int range
      model.net.init_args.hidden_sizes: {choices: [[256, 128], [512, 256]]}
      model.net.init_args.dropout: {low: 0.05, high: 0.3, when: {model.tta_flip: true}}

An option with ``when`` is sampled only in trials where every option named there took that value;
otherwise the base config's value stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fmnist_pl.errors import ConfigError

PRUNERS = ("median", "successive_halving", "none")
_EXAMPLE = "model.label_smoothing: {low: 0, high: 0.2}"
_KEYS = {
    "base_config",
    "metric",
    "direction",
    "n_trials",
    "seed",
    "pruner",
    "pruner_startup_trials",
    "pruner_warmup_epochs",
    "space",
}


@dataclass(frozen=True)
class Parameter:
    """One CLI option of the search space: a float or int range (log or linear), or a list of choices."""

    option: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) takes for this option."""
        if self.choices:
            # Optuna stores categorical values as they are; lists become their YAML text and back.
            picked = trial.suggest_categorical(self.option, [_storable(choice) for choice in self.choices])
            return yaml.safe_load(picked) if isinstance(picked, str) and picked.startswith("[") else picked
        if self.integer:
            return trial.suggest_int(self.option, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.option, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this option can take in the space."""
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (not self.integer or float(value).is_integer())

    def stored(self, value: Any) -> Any:
        """``value`` as Optuna stores it for this option (a list choice as its YAML text)."""
        return _storable(value) if self.choices else value

    def extremes(self) -> tuple[Any, ...]:
        """The ends of the range, or every choice."""
        return self.choices or ((int(self.low), int(self.high)) if self.integer else (self.low, self.high))

    def example(self) -> Any:
        """A value this option can take (checking that the CLI accepts the option)."""
        return self.extremes()[0]


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep file says; see the module docstring for the format."""

    name: str
    base_config: Path
    space: tuple[Parameter, ...]
    metric: str = "val/acc"
    direction: str = "maximize"
    n_trials: int = 20
    seed: int = 0
    pruner: str = "median"
    pruner_startup_trials: int = 4
    pruner_warmup_epochs: int = 0

    def sample(self, trial: Any) -> dict[str, Any]:
        """The options of one trial, in the space's order (a condition only looks at options before it)."""
        values: dict[str, Any] = {}
        for parameter in self.space:
            if all(values.get(option, _UNSET) == wanted for option, wanted in parameter.when.items()):
                values[parameter.option] = parameter.suggest(trial)
        return values


_UNSET = object()


def _storable(choice: Any) -> Any:
    if isinstance(choice, (list, tuple, dict)):
        return yaml.safe_dump(choice, default_flow_style=True).strip()
    return choice


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep file; every mistake is one ``ConfigError`` line naming the file and key."""
    if not path.is_file():
        available = ", ".join(sorted(str(found) for found in Path("configs/sweeps").glob("*.yaml")))
        raise ConfigError(
            f"--config {path}: no such sweep file" + (f"; the sweeps here: {available}" if available else "")
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: a sweep file is a mapping with base_config and space")
    if unknown := sorted(set(raw) - _KEYS):
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; a sweep file has {', '.join(sorted(_KEYS))}")
    base = raw.get("base_config")
    if not base or not Path(base).is_file():
        raise ConfigError(f"{path}: base_config {base!r} does not exist; name a config such as configs/fast.yaml")
    metric = str(raw.get("metric", "val/acc"))
    if metric.startswith("test/"):
        raise ConfigError(f"{path}: metric {metric} is a test-set metric; choose on the validation split (val/...)")
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{path}: direction must be maximize or minimize, got {direction!r}")
    pruner = raw.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(f"{path}: pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    space = raw.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{path}: the space is empty; give at least one option, e.g. model.label_smoothing: {{low: 0, high: 0.2}}"
        )
    return SweepSpec(
        name=path.stem,
        base_config=Path(base),
        space=tuple(_parameter(path, option, value) for option, value in space.items()),
        metric=metric,
        direction=direction,
        n_trials=_positive(path, "n_trials", raw.get("n_trials", 20)),
        seed=int(raw.get("seed", 0)),
        pruner=pruner,
        pruner_startup_trials=_positive(path, "pruner_startup_trials", raw.get("pruner_startup_trials", 4)),
        pruner_warmup_epochs=_positive(path, "pruner_warmup_epochs", raw.get("pruner_warmup_epochs", 0), low=0),
    )


def _parameter(path: Path, option: str, value: Any) -> Parameter:
    where = f"{path}: space.{option}"
    if option.startswith("--"):
        raise ConfigError(f"{where}: name the option without dashes ({option[2:]})")
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: give {{low: ..., high: ...}} (optionally log: true) or {{choices: [...]}}")
    when = value.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: when is a mapping of option: value")
    if "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return Parameter(option, choices=tuple(choices), when=when)
    low, high = value.get("low"), value.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
        raise ConfigError(f"{where}: needs numbers low < high, got low={low!r} high={high!r}")
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    integer = value.get("type") == "int" or (
        isinstance(low, int) and isinstance(high, int) and value.get("type") != "float"
    )
    return Parameter(option, low=low, high=high, log=log, integer=integer, when=when)


def _positive(path: Path, key: str, value: Any, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{path}: {key} must be a whole number of at least {low}, got {value!r}")
    return value
