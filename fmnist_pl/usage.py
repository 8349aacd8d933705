"""What the command line says to a person: a misspelt option's closest match, a missing config's
alternatives, the next steps after a fit, and silence for what nobody can act on."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import warnings
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from fmnist_pl.argparse_internals import option_strings
from fmnist_pl.errors import ConfigError


def closest_option(parser: ArgumentParser, message: str) -> str | None:
    """For jsonargparse's errors about an option that does not exist: one line naming it and the
    closest real one (``--trainer.max_epoch`` -> ``--trainer.max_epochs``, ``--model.net.hiden_sizes``
    -> ``--model.net.hidden_sizes``); None for any other error."""
    if match := re.search(r"unrecognized arguments:\s*(\S+)", message, re.IGNORECASE):
        given = match.group(1).split("=", 1)[0]
        options = option_strings(parser)
    elif match := re.search(
        r'Parser key "([\w.]+)":.*?given class_path \'([\w.]+)\':\s*Option \'(\w+)\' is not accepted',
        message,
        re.DOTALL,
    ):
        key, class_path, name = match.groups()
        given = f"--{key}.{name}"
        options = [f"--{key}.{parameter}" for parameter in _init_parameters(class_path)]
    else:
        return None
    close = difflib.get_close_matches(given, options, n=1, cutoff=0.6)
    suggestion = f"; did you mean {close[0]}?" if close else ""
    prog = parser.prog.replace(" [options]", "")
    return f"unknown option {given}{suggestion} (`{prog} --help` lists them all)"


def _init_parameters(class_path: str) -> list[str]:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        return [parameter for parameter in inspect.signature(cls).parameters if parameter not in ("args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


def missing_config(argv: list[str]) -> None:
    """Raise ``ConfigError`` when a ``--config`` file does not exist, listing the configs in ``configs/``.

    An inline YAML or JSON value (jsonargparse accepts one for ``--config``) is left to the parser.
    """
    for position, arg in enumerate(argv):
        if arg == "--config" and position + 1 < len(argv):
            value = argv[position + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if Path(value).is_file() or any(char in value for char in "{}:\n"):
            continue
        available = sorted(str(path) for path in Path("configs").glob("*.yaml"))
        listed = f"; the configs here: {', '.join(available)}" if available else ""
        raise ConfigError(f"--config {value}: no such file{listed}")


def option_before_subcommand(argv: list[str], commands: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` naming the first option typed before the subcommand (``--config X fit``),
    with the command as it should be written; the parser itself would name a key from inside the file."""
    if not argv or not argv[0].startswith("-") or argv[0] in ("-h", "--help"):
        return
    position = next((i for i, arg in enumerate(argv) if arg in commands), None)
    if position is None:
        return
    typed = argv[0].split("=", 1)[0]
    reordered = " ".join([argv[position], *argv[:position], *argv[position + 1 :]])
    raise ConfigError(
        f"{typed} comes before the subcommand {argv[position]}: options, --config included, go after it, "
        f"as in `python -m fmnist_pl {reordered}`"
    )


def unknown_command(argv: list[str], commands: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` listing every command (LightningCLI's own message names only its four)
    when none is given or the first word is not one; ``--help`` and options go on to the parser."""
    if argv and (argv[0].startswith("-") or argv[0] in commands):
        return
    listed = ", ".join(commands)
    if not argv:
        raise ConfigError(f"give a command: {listed} (`python -m fmnist_pl --help` says what each does)")
    close = difflib.get_close_matches(argv[0], commands, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"unknown command {argv[0]!r}; {hint}the commands are {listed} (`python -m fmnist_pl --help`)")


def next_steps(trainer: Any) -> str:
    """Where a finished fit's run went, and the commands that evaluate it and show its curves."""
    # The logger's own folder (Trainer.log_dir would be a collective under DDP; this runs on rank 0 only).
    log_dir = getattr(trainer.logger, "log_dir", None)
    lines = []
    saved = [callback.best_model_path for callback in trainer.checkpoint_callbacks if callback.best_model_path]
    last = next((path for path in saved if Path(path).name == "last.ckpt"), None)
    best = next((path for path in saved if Path(path).name.startswith("best-")), None)
    if log_dir is not None:
        lines.append(f"run folder: {log_dir}")
    if last or best:
        # The result of a run is its end, as the tutorial reports it; the best epoch is one more option.
        lines.append(f"evaluate it: python -m fmnist_pl test --ckpt_path {last or best}")
    if last and best:
        lines.append(f"  (the last epoch; the best by val/acc: --ckpt_path {best})")
    if log_dir is not None:
        lines.append(f"its curves:  tensorboard --logdir {Path(log_dir).parent}")
    return "\n".join(lines) if lines else "no logger and no checkpoint: this run left nothing on disk"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_LIGHTNING_LOG = logging.getLogger("lightning.pytorch.utilities.rank_zero")
_LITLOGGER_TIP = _DropMessage("💡 Tip: For seamless cloud logging")


def quiet_unactionable(subcommand: str | None) -> None:
    """Hide the messages a user of this command line can do nothing about, each by its text and origin:

    - torch 2.14 deprecates ``LeafSpec``, which Lightning's own ``_pytree`` still builds (every command);
    - Lightning's advertisement for its cloud logger (every command);
    - "No seed found" when no ``seed_everything`` is given, as for ``test``/``validate``/``predict``
      on a checkpoint (Lightning then seeds with 0 and says so on the next line);
    - outside ``fit``, "The dirpath has changed": an evaluation logs into a subfolder of the run, so
      the checkpoint callbacks' folder differs, and they save nothing there;
    - in ``predict``, "Couldn't infer the batch indices" of the tensor path's ``DeviceLoader``: Lightning
      records them only for a ``DataLoader``, and the prediction writer reads that loader's own order.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    warnings.filterwarnings("ignore", message=r"No seed found", module=r"lightning\.fabric\.utilities\.seed")
    if _LITLOGGER_TIP not in _LIGHTNING_LOG.filters:
        _LIGHTNING_LOG.addFilter(_LITLOGGER_TIP)
    if subcommand is not None and subcommand != "fit":
        warnings.filterwarnings(
            "ignore", message=r"The dirpath has changed", module=r"lightning\.pytorch\.callbacks\.model_checkpoint"
        )
    if subcommand == "predict":
        warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices .*`DeviceLoader`")
