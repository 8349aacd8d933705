"""Finding, verifying and extracting the IDX files, on small files the tests write."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.datasets.utils import calculate_md5

from fmnist_pl.data.files import ensure_files, raw_dir, read_split
from fmnist_pl.data.sets import FASHION_MNIST
from fmnist_pl.errors import DataError

from .helpers import idx_bytes, real_source_dir, write_tiny_dataset


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".partial"]


def test_extracts_gz_copies_and_verifies_them(tmp_path: Path) -> None:
    tiny = write_tiny_dataset(tmp_path / "src")
    target = ensure_files(tmp_path / "data", tiny, download=False)
    assert target == raw_dir(tmp_path / "data", tiny) == tmp_path / "data" / "MNIST" / "raw"
    for spec in tiny.all_files():
        assert calculate_md5(target / spec.name) == spec.md5
    assert leftovers(tmp_path / "data") == []


def test_uses_decompressed_copies_too(tmp_path: Path) -> None:
    tiny = write_tiny_dataset(tmp_path / "src", gz=False)
    target = ensure_files(tmp_path / "data", tiny, download=False)
    assert all(calculate_md5(target / s.name) == s.md5 for s in tiny.all_files())


def test_files_already_in_data_dir_need_no_source(tmp_path: Path) -> None:
    tiny = replace(write_tiny_dataset(tmp_path / "data" / "MNIST" / "raw", gz=False), local_dirs=())
    assert ensure_files(tmp_path / "data", tiny, tmp_path / "nowhere", download=False).is_dir()


def test_first_source_folder_with_the_file_wins(tmp_path: Path) -> None:
    tiny = write_tiny_dataset(tmp_path / "second")
    (tmp_path / "first").mkdir()
    write_tiny_dataset(tmp_path / "third", train_size=7)  # other files: checked, so they would fail
    ensure_files(
        tmp_path / "data", replace(tiny, local_dirs=(tmp_path / "second", tmp_path / "third")), tmp_path / "first"
    )
    assert all((raw_dir(tmp_path / "data", tiny) / s.name).is_file() for s in tiny.all_files())


def test_source_folders_in_order_option_env_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = Path("/usr/share/datasets/fashion-mnist")
    monkeypatch.setenv("FMNIST_DATA", str(tmp_path / "env"))
    assert FASHION_MNIST.search_dirs(tmp_path / "opt") == [tmp_path / "opt", tmp_path / "env", debian]
    monkeypatch.delenv("FMNIST_DATA")
    assert FASHION_MNIST.search_dirs(None) == [debian]


@pytest.mark.parametrize(
    ("damage", "expected_words"),
    [
        (lambda data: data[: len(data) // 2], "is truncated"),
        (lambda data: b"", "is empty"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]), "is corrupt"),
        (lambda data: b"<html>not found</html>" * 10, "is not an IDX file"),
    ],
    ids=["truncated", "empty", "flipped-byte", "not-idx"],
)
def test_damaged_file_in_data_dir_is_named_with_both_checksums(tmp_path: Path, damage, expected_words: str) -> None:
    tiny = replace(write_tiny_dataset(tmp_path / "data" / "MNIST" / "raw", gz=False), local_dirs=())
    bad = raw_dir(tmp_path / "data", tiny) / tiny.all_files()[0].name
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(DataError) as caught:
        ensure_files(tmp_path / "data", tiny, download=False)
    message = str(caught.value)
    assert str(bad) in message and expected_words in message
    assert tiny.all_files()[0].md5 in message
    if bad.stat().st_size:
        assert calculate_md5(bad) in message
    assert "Delete it" in message and "\n" not in message


def test_corrupt_source_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    tiny = write_tiny_dataset(tmp_path / "src")
    specs = tiny.all_files()
    source = tmp_path / "src" / f"{specs[2].name}.gz"
    data = bytearray(gzip.decompress(source.read_bytes()))
    data[100] ^= 0xFF
    source.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=f"{source}.*is corrupt.*expected {specs[2].md5}"):
        ensure_files(tmp_path / "data", tiny, download=False)
    assert not (raw_dir(tmp_path / "data", tiny) / specs[2].name).exists()
    assert leftovers(tmp_path / "data") == []


def test_truncated_gz_source_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    tiny = write_tiny_dataset(tmp_path / "src")
    specs = tiny.all_files()
    source = tmp_path / "src" / f"{specs[0].name}.gz"
    source.write_bytes(source.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{source} cannot be decompressed"):
        ensure_files(tmp_path / "data", tiny, download=False)
    assert not (raw_dir(tmp_path / "data", tiny) / specs[0].name).exists()
    assert leftovers(tmp_path / "data") == []


def test_interrupted_extraction_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = write_tiny_dataset(tmp_path / "src")

    def copy_half_then_die(src, dst, length=0):
        dst.write(src.read(1000))
        raise KeyboardInterrupt  # what Ctrl-C (or a kill that Python sees) does mid-copy

    monkeypatch.setattr(shutil, "copyfileobj", copy_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensure_files(tmp_path / "data", tiny, download=False)
    assert not any(raw_dir(tmp_path / "data", tiny).iterdir())


def test_nothing_found_lists_every_place_and_every_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FMNIST_DATA", raising=False)
    sources = [tmp_path / "opt", tmp_path / "missing-folder"]
    (tmp_path / "opt").mkdir()
    with pytest.raises(DataError) as caught:
        ensure_files(tmp_path / "data", replace(FASHION_MNIST, local_dirs=(sources[1],)), sources[0], download=False)
    message = str(caught.value)
    for place in [raw_dir(tmp_path / "data", FASHION_MNIST), *sources]:
        assert str(place) in message
    for fix in ("apt-get install -y dataset-fashion-mnist", "$FMNIST_DATA", "--data.download true"):
        assert fix in message
    assert "not allowed" in message and "\n" not in message


def test_failed_download_is_reported_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real download cannot run in the test environment (no internet, and it must not depend on
    # one), so torchvision's dataset is replaced by one that fails the way a network error does.
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_network)
    with pytest.raises(DataError, match="torchvision download failed .*network unreachable"):
        ensure_files(tmp_path / "data", replace(FASHION_MNIST, local_dirs=()), download=True)
    assert [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".download")] == []


def test_read_split_round_trips_shape_and_values(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    labels = torch.arange(7, dtype=torch.uint8)
    images_file, labels_file = FASHION_MNIST.files["test"]
    (tmp_path / images_file.name).write_bytes(idx_bytes(images))
    (tmp_path / labels_file.name).write_bytes(idx_bytes(labels))
    got_images, got_labels = read_split(tmp_path, FASHION_MNIST, "test")
    assert torch.equal(got_images, images) and torch.equal(got_labels, labels)
    (tmp_path / images_file.name).write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(DataError, match="not a complete IDX file"):
        read_split(tmp_path, FASHION_MNIST, "test")


def test_real_files_match_the_published_checksums(real_data_dir: Path) -> None:
    folder = raw_dir(real_data_dir, FASHION_MNIST)
    assert {f.name: calculate_md5(folder / f.name) for f in FASHION_MNIST.all_files()} == {
        f.name: f.md5 for f in FASHION_MNIST.all_files()
    }
    assert read_split(folder, FASHION_MNIST, "train")[0].shape == (60000, 28, 28)
    assert read_split(folder, FASHION_MNIST, "test")[1].shape == (10000,)
    assert real_source_dir() is not None
