"""Writing files so that a crash never leaves a half-written one under the real name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fmnist_pl.errors import WriteError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    The temporary file is in the same folder (a rename is atomic only within one file system) and
    starts with a dot, so nothing that looks for ``*.ckpt`` or ``*.png`` takes it for a real file.
    On any error it is removed and ``path`` is left as it was; a process killed before the rename
    leaves the old ``path`` intact and, at worst, a stray ``.NAME.PID.partial``. A folder that cannot
    be created or a write that fails (a full disk) is a one-line ``WriteError`` naming ``path``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        tmp.replace(path)
        _fsync_folder(path.parent)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {describe(err)}; the previous file, if any, is unchanged.") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def describe(err: OSError) -> str:
    """``NotADirectoryError (Not a directory)``: the kind of failure and the system's words for it."""
    return f"{type(err).__name__} ({err.strerror or err})"


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable: without it a power cut can bring back the old directory entry.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
