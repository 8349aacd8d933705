"""Find, verify and extract a data set's four IDX files, offline first.

Sources, in order (FashionMNIST's in brackets; each :class:`~fmnist_pl.data.sets.DataSet` says its own):
  1. the decompressed files already in ``<data_dir>/<name>/raw`` (torchvision's layout);
  2. local copies (``.gz`` or decompressed): a folder given in the config, the data set's environment
     variable [``$FMNIST_DATA``] and its local folders [``/usr/share/datasets/fashion-mnist``, Debian's
     ``dataset-fashion-mnist``];
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
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import calculate_md5

from fmnist_pl.atomic import atomic_path
from fmnist_pl.data.sets import DataSet, IdxFile
from fmnist_pl.errors import DataError

_CHUNK = 1 << 20
# IDX type code 0x08: unsigned bytes, the only type FashionMNIST uses.
_IDX_UINT8 = 0x08


_FIX_LOCAL = "Delete it and run again to extract a fresh copy"


def raw_dir(data_dir: str | os.PathLike, dataset: DataSet) -> Path:
    """The folder holding the decompressed files; the same layout torchvision's data sets use."""
    return Path(data_dir) / dataset.name / "raw"


def ensure_files(
    data_dir: str | os.PathLike,
    dataset: DataSet,
    source_dir: str | os.PathLike | None = None,
    download: bool = True,
    files: Iterable[IdxFile] | None = None,
) -> Path:
    """Make sure every file of ``dataset`` (or only ``files`` of it) is in ``raw_dir(data_dir, dataset)``
    and verified, looking in ``source_dir`` first, then in the data set's own places; return that folder.

    Raises:
        DataError: a file is corrupt or truncated (naming it, both checksums and the fix), or no
            source has it (listing every place tried and the ways to fix that).
    """
    target_dir = raw_dir(data_dir, dataset)
    source_dirs = dataset.search_dirs(source_dir)
    fix_source = f"Replace it with a good copy{f' ({dataset.install_hint})' if dataset.install_hint else ''}"
    missing = []
    for idx_file in dataset.all_files() if files is None else files:
        target = target_dir / idx_file.name
        if target.exists():
            verify(target, idx_file.md5, fix=_FIX_LOCAL)
            continue
        source = _find_local_copy(idx_file, source_dirs)
        if source is None:
            missing.append(idx_file)
        else:
            _install(source, target, idx_file.md5, fix_source)
    if not missing:
        return target_dir
    download_outcome = "not allowed (--data.download false)"
    if download:
        failure = _download_with_torchvision(Path(data_dir), dataset, missing, fix_source)
        if failure is None:
            return target_dir
        download_outcome = f"failed ({failure})"
    places = [f"{target_dir} (not there)"]
    places += [f"{d} ({'no such folder' if not d.is_dir() else 'not there'})" for d in source_dirs]
    env = f"${dataset.env_var}" if dataset.env_var else None
    if env and not os.environ.get(dataset.env_var):
        places.append(f"{env} (not set)")
    places.append(f"torchvision download {download_outcome}")
    fixes = [dataset.install_hint] if dataset.install_hint else []
    fixes.append(
        f"set {env} to a folder holding the four files (.gz or decompressed)" if env else "give --data.source_dir"
    )
    raise DataError(
        f"{dataset.name} file(s) {', '.join(f.name for f in missing)} not found. Tried: {'; '.join(places)}. "
        f"Fix: {', or '.join(fixes)}, or allow the download (--data.download true, needs internet)."
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


def read_split(folder: Path, dataset: DataSet, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``train`` or ``test`` split of ``dataset`` from a folder of decompressed files, read by
    torchvision's readers: uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``."""
    images, labels = dataset.files[split]
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


def _install(source: Path, target: Path, expected_md5: str, fix: str) -> None:
    """Copy (decompressing ``.gz``) ``source`` to ``target`` through a verified temporary file."""
    written: Path | None = None
    try:
        with atomic_path(target) as written:
            try:
                opener = gzip.open if source.suffix == ".gz" else open
                with opener(source, "rb") as src, open(written, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            except (EOFError, OSError, zlib.error) as err:
                raise DataError(f"{source} cannot be decompressed ({err}). {fix}.") from err
            verify(written, expected_md5, fix=fix)
    except DataError as err:
        # Name the source the user can act on, not the temporary file.
        raise DataError(str(err).replace(str(written), str(source)) if written else str(err)) from None


def _download_with_torchvision(data_dir: Path, dataset: DataSet, wanted: Sequence[IdxFile], fix: str) -> str | None:
    """Download into a temporary folder, then install the verified files; return why it failed, or None."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=data_dir) as tmp:
        try:
            dataset.torchvision_dataset()(tmp, train=True, download=True)
        except Exception as err:  # noqa: BLE001 - any network or server failure means "no download"
            return f"{type(err).__name__}: {err}".replace("\n", " ")
        for idx_file in wanted:
            source, target = raw_dir(tmp, dataset) / idx_file.name, raw_dir(data_dir, dataset) / idx_file.name
            _install(source, target, idx_file.md5, fix)
    return None
