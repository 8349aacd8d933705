"""Find, verify and extract the four FashionMNIST IDX files, offline first.

Sources, in order:
  1. the decompressed files already in ``<data_dir>/FashionMNIST/raw`` (torchvision's layout);
  2. local copies (``.gz`` or decompressed): a folder given in the config, ``$FMNIST_DATA``, and
     ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``);
  3. torchvision's download, when allowed.

Every file is checked by the MD5 of its decompressed bytes before anything reads it. Extraction
writes to a temporary name in the target folder and renames only after the check, so an
interrupted run never leaves a file that looks complete. Reading and hashing are torchvision's
(``read_image_file``, ``read_label_file``, ``calculate_md5``); what torchvision lacks is here: the
search of local copies, the check of decompressed files, and errors that say what is wrong.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import calculate_md5

from fmnist_pl.atomic import atomic_path
from fmnist_pl.errors import DataError

ENV_VAR = "FMNIST_DATA"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_CHUNK = 1 << 20
# IDX type code 0x08: unsigned bytes, the only type FashionMNIST uses.
_IDX_UINT8 = 0x08


@dataclass(frozen=True)
class IdxFile:
    """One of the data set's files: its name without ``.gz`` and the MD5 of its decompressed bytes."""

    name: str
    md5: str


TRAIN_IMAGES = IdxFile("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a")
TRAIN_LABELS = IdxFile("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9")
TEST_IMAGES = IdxFile("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a")
TEST_LABELS = IdxFile("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965")
FASHION_MNIST_FILES: tuple[IdxFile, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SPLIT_FILES: dict[str, tuple[IdxFile, IdxFile]] = {
    "train": (TRAIN_IMAGES, TRAIN_LABELS),
    "test": (TEST_IMAGES, TEST_LABELS),
}

_FIX_LOCAL = "Delete it and run again to extract a fresh copy"
_FIX_SOURCE = "Replace it with a good copy (e.g. `apt-get install --reinstall dataset-fashion-mnist`)"


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """The folder holding the decompressed files; the same layout torchvision's FashionMNIST uses."""
    return Path(data_dir) / "FashionMNIST" / "raw"


def local_source_dirs(source_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for local copies: ``source_dir``, then ``$FMNIST_DATA``, then Debian's folder."""
    dirs = [Path(source_dir)] if source_dir else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(DEBIAN_DIR)
    return dirs


def ensure_files(
    data_dir: str | os.PathLike,
    source_dirs: Sequence[Path],
    download: bool,
    files: Iterable[IdxFile] = FASHION_MNIST_FILES,
) -> Path:
    """Make sure every file is in ``raw_dir(data_dir)`` and verified; return that folder.

    Raises:
        DataError: a file is corrupt or truncated (naming it, both checksums and the fix), or no
            source has it (listing every place tried and the ways to fix that).
    """
    target_dir = raw_dir(data_dir)
    missing = []
    for idx_file in files:
        target = target_dir / idx_file.name
        if target.exists():
            verify(target, idx_file.md5, fix=_FIX_LOCAL)
            continue
        source = _find_local_copy(idx_file, source_dirs)
        if source is None:
            missing.append(idx_file)
        else:
            _install(source, target, idx_file.md5)
    if not missing:
        return target_dir
    download_outcome = "not allowed (--data.download false)"
    if download:
        failure = _download_with_torchvision(Path(data_dir), missing)
        if failure is None:
            return target_dir
        download_outcome = f"failed ({failure})"
    places = [f"{target_dir} (not there)"]
    places += [f"{d} ({'no such folder' if not d.is_dir() else 'not there'})" for d in source_dirs]
    if not os.environ.get(ENV_VAR):
        places.append(f"${ENV_VAR} (not set)")
    places.append(f"torchvision download {download_outcome}")
    raise DataError(
        f"FashionMNIST file(s) {', '.join(f.name for f in missing)} not found. Tried: {'; '.join(places)}. "
        f"Fix: `apt-get install -y dataset-fashion-mnist`, or set ${ENV_VAR} to a folder holding the four "
        "files (.gz or decompressed), or allow the download (--data.download true, needs internet)."
    )


def verify(path: Path, expected_md5: str, fix: str) -> None:
    """Raise ``DataError`` unless ``path`` is a complete IDX file whose MD5 is ``expected_md5``."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path} is empty (expected MD5 {expected_md5}). {fix}.")
    actual = calculate_md5(path, chunk_size=_CHUNK)
    if actual == expected_md5:
        return
    expected_size = idx_size_from_header(path)
    if expected_size is None:
        problem = "is not an IDX file"
    elif size < expected_size:
        problem = f"is truncated ({size} of {expected_size} bytes)"
    else:
        problem = "is corrupt"
    raise DataError(f"{path} {problem}: MD5 {actual}, expected {expected_md5}. {fix}.")


def idx_size_from_header(path: Path) -> int | None:
    """The byte size an IDX file of unsigned bytes should have according to its header, or None."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or head[0:2] != b"\0\0" or head[2] != _IDX_UINT8 or not 1 <= head[3] <= 4:
            return None
        ndim = head[3]
        dims_bytes = handle.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    count = 1
    for dim in dims:
        count *= dim
    return 4 + 4 * ndim + count


def read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``train`` or ``test`` split from a folder of decompressed files, read by torchvision's
    readers: uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``."""
    images, labels = SPLIT_FILES[split]
    return _read(read_image_file, folder / images.name), _read(read_label_file, folder / labels.name)


def _read(reader, path: Path) -> torch.Tensor:
    expected = idx_size_from_header(path) if path.is_file() else None
    if expected is None or path.stat().st_size != expected:
        raise DataError(f"{path} is not a complete IDX file of unsigned bytes. {_FIX_LOCAL}.")
    return reader(str(path))


def _find_local_copy(idx_file: IdxFile, source_dirs: Sequence[Path]) -> Path | None:
    for folder in source_dirs:
        for candidate in (folder / f"{idx_file.name}.gz", folder / idx_file.name):
            if candidate.is_file():
                return candidate
    return None


def _install(source: Path, target: Path, expected_md5: str) -> None:
    """Copy (decompressing ``.gz``) ``source`` to ``target`` through a verified temporary file."""
    written: Path | None = None
    try:
        with atomic_path(target) as written:
            try:
                opener = gzip.open if source.suffix == ".gz" else open
                with opener(source, "rb") as src, open(written, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            except (EOFError, OSError, zlib.error) as err:
                raise DataError(f"{source} cannot be decompressed ({err}). {_FIX_SOURCE}.") from err
            verify(written, expected_md5, fix=_FIX_SOURCE)
    except DataError as err:
        # Name the source the user can act on, not the temporary file.
        raise DataError(str(err).replace(str(written), str(source)) if written else str(err)) from None


def _download_with_torchvision(data_dir: Path, wanted: Sequence[IdxFile]) -> str | None:
    """Download into a temporary folder, then install the verified files; return why it failed, or None."""
    from torchvision.datasets import FashionMNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=data_dir) as tmp:
        try:
            FashionMNIST(tmp, train=True, download=True)
        except Exception as err:  # noqa: BLE001 - any network or server failure means "no download"
            return f"{type(err).__name__}: {err}".replace("\n", " ")
        for idx_file in wanted:
            _install(raw_dir(tmp) / idx_file.name, raw_dir(data_dir) / idx_file.name, idx_file.md5)
    return None
