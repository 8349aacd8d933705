"""Writing files so that a crash never leaves a half-written one under the real name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    The temporary file is in the same folder (a rename is atomic only within one file system) and
    starts with a dot, so nothing that looks for ``*.ckpt`` or ``*.png`` takes it for a real file.
    On any error it is removed and ``path`` is left as it was; a process killed before the rename
    leaves the old ``path`` intact and, at worst, a stray ``.NAME.PID.partial``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        tmp.replace(path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


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
