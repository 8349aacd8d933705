"""Errors that the command line reports as one line, without a traceback.

Anything the user can fix (a bad option value, a missing or corrupt file) raises one of these;
``cli.main`` prints the message alone and exits with status 2. Set ``FMNIST_DEBUG=1`` to see the
traceback as well.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """An option has a value outside its allowed range."""


class DataError(UserError):
    """A FashionMNIST file is missing, truncated or corrupt."""


class CheckpointError(UserError):
    """A checkpoint path does not exist or is not a loadable checkpoint."""


class WriteError(UserError):
    """A file or folder cannot be written: a read-only or missing mount, a path below a file, a full disk."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; training stops before anything is saved."""


class BadArgument(ConfigError):
    """A class's argument outside its range, named as the class knows it (``MLP``'s ``dropout``): the
    class knows no command line, which names the option (``--model.net.dropout``) with :meth:`for_option`."""

    def __init__(self, owner: type, name: str, problem: str) -> None:
        super().__init__(f"{owner.__name__}: {name} {problem}")
        self.owner, self.name, self.problem = owner, name, problem

    def for_option(self, option: str) -> ConfigError:
        return ConfigError(f"{option} {self.problem}")


def check_range(option: str, value: float, low: float, high: float) -> None:
    """Raise ``ConfigError`` naming ``option`` unless ``low <= value < high``."""
    if not low <= value < high:
        raise ConfigError(f"{option} must be in [{low}, {high}), got {value}")


def check_at_least(option: str, value: float, low: float) -> None:
    """Raise ``ConfigError`` naming ``option`` unless ``value >= low``."""
    if value < low:
        raise ConfigError(f"{option} must be at least {low}, got {value}")


def find_cause(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` along ``error``'s chain of causes, itself included."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen


def one_line(error: BaseException) -> str | None:
    """What the command line prints for ``error``, or None when it is a bug to show in full.

    A ``UserError``'s message; or Lightning's own line for a callback or logger whose optional
    package is missing (``RichProgressBar` requires `rich` >= 10.2.2. Install it by running `pip
    install -U rich``). Looked for along the chain of causes: jsonargparse reports an error raised
    while building a class given by ``class_path`` (``--model.net``, a callback) as a ValueError of its own.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UserError):
            return str(seen)
        if isinstance(seen, ModuleNotFoundError) and "pip install" in str(seen):
            return str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None
