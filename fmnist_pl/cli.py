"""The command line: a LightningCLI over FashionClassifier and FashionMNISTDataModule.

``python -m fmnist_pl {fit,validate,test,predict} [--config FILE] [--ckpt_path PATH] ...``
"""

from __future__ import annotations

import os
import signal
import sys
from argparse import RawDescriptionHelpFormatter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import lazy_instance
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fmnist_pl.callbacks.figures import TensorBoardFigures
from fmnist_pl.callbacks.nonfinite import StopOnNonFiniteLoss
from fmnist_pl.callbacks.predictions import PredictionCSV
from fmnist_pl.callbacks.preemption import CheckpointOnSigterm
from fmnist_pl.callbacks.rng_state import RestoreRNGState
from fmnist_pl.checkpoints import SafeCheckpointIO, check_fits, check_is_ours, load_checkpoint
from fmnist_pl.data.datamodule import FashionMNISTDataModule
from fmnist_pl.errors import BadArgument, CheckpointError, ConfigError, find_cause, one_line
from fmnist_pl.hparams import public
from fmnist_pl.lightning_internals import (
    KeepCommandLineOverCheckpoint,
    epochs_trained,
    set_version,
    subcommand_parser,
    version_unset,
)
from fmnist_pl.model import MLP
from fmnist_pl.module import FashionClassifier
from fmnist_pl.runs import (
    claim_evaluation_folder,
    claim_run_folder,
    newest_checkpoint,
    run_folder_of,
    runs_folder,
    teacher_checkpoint,
)
from fmnist_pl.usage import (
    closest_option,
    missing_config,
    next_steps,
    option_before_subcommand,
    quiet_unactionable,
    unknown_command,
)

# "last" and "best" are resolved here among the earlier runs: in a new process Lightning would look
# only in the new run's empty folder (last) or fail (best). "hpc" stays Lightning's.
_RUN_ALIASES = ("last", "best")
# Evaluating without a checkpoint scores the freshly initialised network: only when asked for by name.
_UNTRAINED = "untrained"
_EVALUATIONS = ("validate", "test", "predict")


def best_checkpoint() -> ModelCheckpoint:
    """Keeps the checkpoint with the highest ``val/acc``; ``--ckpt_path best`` resolves to it."""
    return ModelCheckpoint(
        monitor="val/acc",
        mode="max",
        filename="best-epoch{epoch:02d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
    )


def last_checkpoint() -> ModelCheckpoint:
    """Writes ``last.ckpt`` at the end of every training epoch (after its validation, if any).

    ``save_last=True`` on the monitored callback is not enough: Lightning 2.6 refreshes it only when a
    new best is saved, so it can hold an older epoch. ``save_on_train_epoch_end``: with
    ``val_check_interval`` below one epoch Lightning would otherwise save only after validations,
    missing the batches after the last one.
    """
    return ModelCheckpoint(monitor=None, filename="last", enable_version_counter=False, save_on_train_epoch_end=True)


# Redrawn after every batch, the bar costs about 6% of an epoch at batch 64 on 2 CPU cores; every
# 20 batches it looks the same to a person and costs about 2% (docs/speed.md).
BAR_REFRESH_RATE = 20


def always_on_callbacks(checkpointing: bool, progress_bar: bool) -> list[Callback]:
    """The callbacks every run gets, whatever ``--trainer.callbacks`` says (LightningCLI's persistent
    callbacks); with ``--trainer.enable_checkpointing false`` none that writes a checkpoint.

    ``progress_bar``: add the default bar, Lightning's ``TQDMProgressBar`` redrawn every
    ``BAR_REFRESH_RATE`` batches (and at each loop's last), in place of the one Lightning would add,
    redrawn after every batch; false where the bar is switched off or the user gives one."""
    callbacks: list[Callback] = [StopOnNonFiniteLoss(), RestoreRNGState()]
    if checkpointing:
        callbacks = [best_checkpoint(), last_checkpoint(), *callbacks, CheckpointOnSigterm()]
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=BAR_REFRESH_RATE))
    return callbacks


def gives_progress_bar(trainer_config: Any) -> bool:
    """Whether ``--trainer.callbacks`` holds a progress bar of the user's own."""
    given = trainer_config.get("callbacks") or []
    return any(isinstance(callback, ProgressBar) for callback in (given if isinstance(given, list) else [given]))


def check_not_finished(path: Path, checkpoint: dict[str, Any], trainer_config: Any) -> None:
    """Raise ``CheckpointError`` when resuming ``checkpoint`` would train nothing: it ended at or past
    ``max_epochs`` or ``max_steps``. Raised before anything is written (Lightning would log a new empty
    run and rewrite its config)."""
    max_epochs, max_steps = trainer_config.get("max_epochs"), trainer_config.get("max_steps") or -1
    epochs_done = epochs_trained(checkpoint)
    steps_done = checkpoint.get("global_step", 0)
    if max_steps != -1 and steps_done >= max_steps:
        reached, longer = f"max_steps={max_steps} (it made {steps_done} steps)", "--trainer.max_steps"
    elif max_steps == -1 and max_epochs not in (None, -1) and epochs_done >= max_epochs:
        reached, longer = f"max_epochs={max_epochs} (it trained {epochs_done} epochs)", "--trainer.max_epochs"
    else:
        return
    raise CheckpointError(
        f"--ckpt_path {path}: that run is complete, it reached {reached}; nothing to resume. To train it "
        f"longer, give the same command with a larger {longer} (a scheduler sized for the old length keeps it)."
    )


def tensorboard_logger(save_dir: str, name: str, version: str | None = None) -> dict[str, Any]:
    """The TensorBoardLogger every run gets unless told otherwise, as LightningCLI's ``class_path`` form.

    No ``hp_metric`` placeholder: the figures callback logs the real metrics to the hparams tab. No
    model graph: tracing it goes through ``torch.jit.trace``, deprecated in torch 2.14 (two
    FutureWarnings a fit), and shows little for an MLP; ``--trainer.logger.init_args.log_graph true``
    turns it on.
    """
    init_args: dict[str, Any] = {"save_dir": save_dir, "name": name, "default_hp_metric": False, "log_graph": False}
    if version is not None:
        init_args["version"] = version
    return {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": init_args}


def option_of(config: Any, owner: type, name: str) -> str:
    """The command-line option that gives ``owner``'s argument ``name``: ``--<key>.<name>`` for the config
    key whose ``class_path`` is ``owner`` (``--model.net.dropout``), else ``<Class> <name>``."""
    wanted = f"{owner.__module__}.{owner.__qualname__}"

    def search(node: Any, key: str) -> str | None:
        if isinstance(node, dict):
            if node.get("class_path") == wanted:
                return key
            for child, value in node.items():
                if (found := search(value, f"{key}.{child}" if key else child)) is not None:
                    return found
        return None

    tree = config.as_dict() if hasattr(config, "as_dict") else config
    key = search(tree, "")
    if key is None:
        return f"{owner.__name__} {name}"
    return f"--{key.split('.', 1)[1] if key.split('.', 1)[0] in LightningCLI.subcommands() else key}.{name}"


class HintingParser(LightningArgumentParser):
    """LightningCLI's parser, with no abbreviated options, and one line for the mistakes people make most:
    an option before the subcommand, a misspelt option (with the closest real one). The full usage
    stays behind ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if "not accepted before subcommand" in message:
            raise ConfigError(
                f"{message.strip()}: options, --config included, go after the subcommand, "
                "e.g. `python -m fmnist_pl fit --config configs/dropout.yaml`"
            )
        if (hint := closest_option(self, message)) is not None:
            raise ConfigError(hint)
        super().error(message, ex)


COMMANDS = (*LightningCLI.subcommands(), "show", "export", "sweep", "serve")

DESCRIPTION = """Train, evaluate and use an MLP classifier for FashionMNIST.

Commands: fit, validate, test and predict (Lightning's; `python -m fmnist_pl fit --help`), and
  show     image grids with class names   (`python -m fmnist_pl show --help`)
  export   one self-contained ONNX file    (`python -m fmnist_pl export --help`)
  sweep    a hyperparameter search (Optuna) (`python -m fmnist_pl sweep --help`)
  serve    an HTTP service and a web page    (`python -m fmnist_pl serve --help`)"""


class FashionCLI(KeepCommandLineOverCheckpoint, LightningCLI):
    """LightningCLI with this project's defaults, links between data and model, and checkpoint handling."""

    def __init__(self, args: ArgsType = None, run: bool = True, extra_callbacks: Sequence[Callback] = ()) -> None:
        """``extra_callbacks`` join the persistent ones (a sweep's pruning callback); they are not part
        of the saved config, so the run's ``config.yaml`` fits again without them."""
        self._extra_callbacks = list(extra_callbacks)
        argv = sys.argv[1:] if args is None else args
        # Each subcommand's parser describes the Trainer, the model, the data and the callbacks again
        # (about 0.1 s each): a command names its subcommand first, so only that one is built.
        # Without one (`python -m fmnist_pl --help`, an error) all four are, and all are listed.
        named = argv[0] if isinstance(argv, (list, tuple)) and argv else None
        self._only_subcommand = named if named in LightningCLI.subcommands() else None
        super().__init__(
            FashionClassifier,
            FashionMNISTDataModule,
            trainer_defaults={
                # A config names its runs with trainer.logger.init_args.name; the rest stays as here.
                "logger": tensorboard_logger("lightning_logs", "default"),
                # The persistent callbacks are added in instantiate_trainer, which knows enable_checkpointing.
            },
            # Each run has its own version folder; overwriting only matters for a fixed --trainer.logger.version.
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "python -m fmnist_pl",
                "description": DESCRIPTION,
                "formatter_class": RawDescriptionHelpFormatter,
            },
            parser_class=HintingParser,
            # The model builds its own optimizer (OptimizerCallable), so no top-level --optimizer.
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    _checkpoint: tuple[Path, dict[str, Any]] | None = None  # the --ckpt_path file, read once when parsing

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        every = LightningCLI.subcommands()
        return every if self._only_subcommand is None else {self._only_subcommand: every[self._only_subcommand]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--float32_matmul_precision",
            choices=["highest", "high", "medium"],
            default=None,
            help="torch.set_float32_matmul_precision on CUDA (a setting for the whole process, so only when "
            "asked): 'high' lets float32 matrix products use TF32, as Lightning's own warning recommends; "
            "unset leaves torch's own, full float32.",
        )
        parser.add_lightning_class_args(TensorBoardFigures, "figures")
        parser.add_lightning_class_args(PredictionCSV, "predictions")
        parser.set_defaults({"model.net": lazy_instance(MLP)})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse; with ``--ckpt_path FILE``, parse again with the checkpoint's hyperparameters as defaults.

        Precedence, lowest first: the code's defaults, the checkpoint's model and data
        hyperparameters, ``--config`` files, then options on the command line. So ``test --ckpt_path X``
        alone sees exactly the transforms training used, and anything given explicitly still wins.

        ``--ckpt_path last`` means the newest ``last.ckpt`` among the earlier runs in this config's
        log folder (``save_dir/name/*/checkpoints``), ``--ckpt_path best`` the best checkpoint of the
        newest of those runs; either is an error when there is none. ``validate``, ``test`` and
        ``predict`` need a checkpoint; ``--ckpt_path untrained`` scores the network as initialised.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand in _EVALUATIONS and ckpt_path in (None, _UNTRAINED):
            if ckpt_path is None:
                raise ConfigError(
                    f"{subcommand}: no --ckpt_path, so it would score an untrained network; give --ckpt_path "
                    f"FILE, best or last (the config's newest run), or --ckpt_path {_UNTRAINED} to mean it"
                )
            self.config[subcommand]["ckpt_path"] = None
            return
        if ckpt_path is None or ckpt_path == "hpc":
            return
        if ckpt_path in _RUN_ALIASES:
            resolved = newest_checkpoint(runs_folder(self.config[subcommand].trainer), ckpt_path)
        else:
            resolved = Path(ckpt_path)
        checkpoint = load_checkpoint(resolved)
        check_is_ours(resolved, checkpoint)
        if subcommand == "fit":
            check_not_finished(resolved, checkpoint, self.config[subcommand].trainer)
        if ckpt_path in _RUN_ALIASES and rank_zero_only.rank == 0:
            action = "resuming from" if subcommand == "fit" else "loading"
            print(f"--ckpt_path {ckpt_path}: {action} {resolved}", file=sys.stderr)
        subcommand_parser(self, subcommand).set_defaults(self._checkpoint_defaults(checkpoint, resolved, subcommand))
        super().parse_arguments(parser, args)
        self.config[subcommand]["ckpt_path"] = str(resolved)
        self._checkpoint = (resolved, checkpoint)

    def before_instantiate_classes(self) -> None:
        quiet_unactionable(self.subcommand)
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and config.model.get("teacher"):
            # A run name's folder is the command line's to resolve; the model takes a file.
            config.model.teacher = str(teacher_checkpoint(config.model.teacher))
        if config.float32_matmul_precision is not None and torch.cuda.is_available():
            torch.set_float32_matmul_precision(config.float32_matmul_precision)

    def instantiate_classes(self) -> None:
        """LightningCLI's, with a class's own complaint about an argument (``BadArgument``: the networks
        know no command line) turned into one naming the option that set it (``--model.net.dropout``)."""
        try:
            super().instantiate_classes()
        except Exception as err:
            bad = find_cause(err, BadArgument)
            if bad is None:
                raise
            raise bad.for_option(option_of(self.config, bad.owner, bad.name)) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with this project's persistent callbacks (:func:`always_on_callbacks`), reading
        and writing checkpoints through ``SafeCheckpointIO`` unless told otherwise.

        The checkpoint IO is set on the strategy rather than as a default of ``--trainer.plugins``, so
        that plugins given for other reasons (precision, environments) do not silently drop it. A
        ``--ckpt_path`` whose network does not fit the model is refused first, before any folder exists.
        """
        if self._checkpoint is not None:  # the model exists now; nothing is written before this check
            check_fits(*self._checkpoint, self.model)
            self._checkpoint = None  # the Trainer reads the file again itself
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        checkpointing = config.trainer.get("enable_checkpointing") is not False
        progress_bar = config.trainer.get("enable_progress_bar") is not False and not gives_progress_bar(config.trainer)
        self.trainer_defaults["callbacks"] = always_on_callbacks(checkpointing, progress_bar) + self._extra_callbacks
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        self._claim_run_folder(trainer)
        self._claim_evaluation_folder(trainer)
        return trainer

    @staticmethod
    def _claim_run_folder(trainer: Trainer) -> None:
        """Give a logger that would pick its own ``version_N`` one claimed atomically
        (``runs.claim_run_folder``): fits started at once never share a folder.

        Done once the model, the data and the trainer exist, so an option refused on the way leaves
        no folder behind; the run's ``config.yaml`` keeps ``version: null``. Only the first process of
        the first node claims: under DDP the others' loggers write nothing, and Lightning takes the
        run folder from process 0.
        """
        logger = trainer.logger
        if logger is None or not version_unset(logger):
            return
        if rank_zero_only.rank != 0 or int(os.environ.get("NODE_RANK", "0")) != 0:
            return
        set_version(logger, claim_run_folder(Path(logger.root_dir)))

    _evaluation_folder: Path | None = None  # <run>/<subcommand>-<checkpoint>: claimed once nothing can fail

    def _claim_evaluation_folder(self, trainer: Trainer) -> None:
        """An evaluation of a run's checkpoint logs into a folder of its own in the run,
        ``<subcommand>-<checkpoint name>`` (``test-last``), or ``...-2``, ``-3`` when evaluated again:
        each evaluation keeps its report."""
        folder, self._evaluation_folder = self._evaluation_folder, None
        logger = trainer.logger
        if folder is None or rank_zero_only.rank != 0 or not isinstance(logger, TensorBoardLogger):
            return
        claimed = claim_evaluation_folder(folder.parent, folder.name)
        set_version(logger, f"{folder.parent.name}/{claimed}")

    def _checkpoint_defaults(self, checkpoint: dict[str, Any], ckpt_path: Path, subcommand: str) -> dict[str, Any]:
        model_hparams = checkpoint.get("hyper_parameters", {})
        data_hparams = checkpoint.get("datamodule_hyper_parameters", {})
        defaults = {f"model.{k}": v for k, v in public(model_hparams).items()}
        defaults |= {f"data.{k}": v for k, v in public(data_hparams).items()}
        run_dir = run_folder_of(ckpt_path, checkpoint)
        if run_dir is not None:
            # A resumed fit goes on in the run's own folder: its curves continue, and its checkpoint
            # callbacks keep their state (Lightning drops it when the folder changes). An evaluation
            # logs into a subfolder of the run, so TensorBoard shows test beside train and val.
            version = run_dir.name if subcommand == "fit" else f"{run_dir.name}/{subcommand}-{ckpt_path.stem}"
            defaults["trainer.logger"] = tensorboard_logger(str(run_dir.parent.parent), run_dir.parent.name, version)
            if subcommand != "fit":
                self._evaluation_folder = run_dir / f"{subcommand}-{ckpt_path.stem}"
        return defaults


def main(args: ArgsType = None) -> FashionCLI | None:
    """Run the command line; errors the user can fix print as one line and exit with status 2.

    ``show``, ``export``, ``sweep`` and ``serve`` are this project's own commands; everything else is LightningCLI's.
    Set ``FMNIST_DEBUG=1`` to get the full traceback instead. A run stopped by SIGTERM exits with
    143 (128 + 15, as a process killed by it would) after one line saying what was saved. A finished
    fit ends with where its run went and what to run next.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        option_before_subcommand(argv, COMMANDS)
        unknown_command(argv, COMMANDS)
        if argv[:1] != ["sweep"]:  # a sweep file is the sweep's own --config
            missing_config(argv)
        quiet_unactionable(None)
        if argv[:1] == ["show"]:
            from fmnist_pl.show import main as show

            show(argv[1:])
            return None
        if argv[:1] == ["sweep"]:
            from fmnist_pl.sweep.command import main as sweep

            sweep(argv[1:], FashionCLI)
            return None
        if argv[:1] == ["export"]:
            from fmnist_pl.export import main as export

            export(argv[1:])
            return None
        if argv[:1] == ["serve"]:
            from fmnist_pl.serve.command import main as serve

            serve(argv[1:])
            return None
        cli = FashionCLI(args=args)
        if cli.subcommand == "fit" and rank_zero_only.rank == 0 and not cli.trainer.interrupted:
            print(next_steps(cli.trainer), file=sys.stderr)
        return cli
    except SIGTERMException as stop:
        # Lightning ends a stopped run with status 0; a scheduler or script must see it did not finish.
        if rank_zero_only.rank == 0:
            where = "".join(f" {note}" for note in getattr(stop, "__notes__", []))
            print(f"error: stopped by SIGTERM{where}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as err:
        if os.environ.get("FMNIST_DEBUG") or (line := one_line(err)) is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
