"""predict on a folder of hostile files: each is skipped with one warning line, the rest are predicted,
the CSV names the skipped ones, and memory stays bounded."""

from __future__ import annotations

import csv
import io
import os
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from fmnist_pl.data.image_files import MAX_PIXELS, find_images, load_images

from .helpers import REPO, run_main

# Runs the real command in a fresh process and prints that process's peak resident memory: a
# subprocess is the only way to measure one command's peak alone.
PEAK_MEMORY_WRAPPER = """
import resource, sys
from PIL import Image
if sys.argv[1] == "no-pillow-limit":
    Image.MAX_IMAGE_PIXELS = None
from fmnist_pl.cli import main
try:
    main(sys.argv[2:])
finally:
    print(f"peak_rss_kb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rows: int, bit_depth: int = 8) -> bytes:
    """A gray PNG whose header says ``width`` x ``height`` and whose (complete, valid) zlib stream
    holds ``rows`` rows: fewer than ``height`` makes a file that claims one size and holds another;
    a huge ``width`` x ``height`` at 1 bit per pixel makes a decompression bomb a few hundred KB long."""
    row = b"\x00" + b"\x80" * ((width * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * min(1000, rows - start)) for start in range(0, rows, 1000)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def good_png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), value).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, str]]:
    """A folder of 3 good images (names with spaces and non-ASCII characters, one reached through a
    link inside the folder) and one of each hostile kind; returns it, the good names, and each
    hostile name with a word its warning must hold."""
    base = tmp_path_factory.mktemp("hostile")
    folder = base / "photos"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "a shirt.png").write_bytes(good_png(40))
    (folder / "sub dir" / "셔츠 ünïcode.png").write_bytes(good_png(200))
    (folder / "link inside.png").symlink_to(folder / "a shirt.png")
    (base / "outside.png").write_bytes(good_png(90))
    (folder / "bomb.png").write_bytes(png_bytes(40_000, 40_000, 40_000, bit_depth=1))
    (folder / "big.png").write_bytes(png_bytes(9_000, 9_000, 9_000, bit_depth=1))
    (folder / "liar.png").write_bytes(png_bytes(100, 100, 10))
    noise = io.BytesIO()
    Image.effect_noise((28, 28), 60).convert("L").save(noise, "PNG")
    (folder / "truncated.png").write_bytes(noise.getvalue()[: len(noise.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "escape.png").symlink_to(base / "outside.png")
    os.mkfifo(folder / "fifo.png")
    good = ["a shirt.png", "link inside.png", "sub dir/셔츠 ünïcode.png"]
    hostile = {
        "bomb.png": "decompression bomb",
        "big.png": "megapixel",
        "liar.png": "holds 10",
        "truncated.png": "truncated",
        "empty.png": "empty",
        "loop.png": "link",
        "dangling.png": "link",
        "escape.png": "outside",
        "fifo.png": "not a regular file",
    }
    return folder, good, hostile


@pytest.mark.slow
def test_a_hostile_folder_is_predicted_with_one_warning_per_bad_file_and_memory_below_2_gb(
    tmp_path: Path, trained_checkpoint: Path, hostile_folder
) -> None:
    folder, good, hostile = hostile_folder
    output = tmp_path / "out.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    command = [
        "predict",
        f"--ckpt_path={trained_checkpoint}",
        f"--data.predict_path={folder}",
        "--trainer.enable_progress_bar=false",
        f"--predictions.output={output}",
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_WRAPPER, "pillow-limit", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped ")]
    assert len(warnings) == len(hostile), "\n".join(warnings)
    for name, word in hostile.items():
        (line,) = [w for w in warnings if w.startswith(f"warning: skipped {folder / name}: ")]
        assert word in line
    assert f"wrote {output}: {len(good)} images" in result.stdout
    assert f"skipped {len(hostile)}" in result.stdout
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    predicted = [r for r in rows if not r["skipped"]]
    assert [str(Path(r["path"]).relative_to(folder)) for r in predicted] == good
    assert all(r["class"] and float(r["probability"]) > 0 for r in predicted)
    skipped = {Path(r["path"]).name: r for r in rows if r["skipped"]}
    assert sorted(skipped) == sorted(hostile)
    assert all(r["class"] == "" and r["probability"] == "" for r in skipped.values())
    assert hostile["liar.png"] in skipped["liar.png"]["skipped"]
    (peak,) = [line for line in result.stderr.splitlines() if line.startswith("peak_rss_kb ")]
    assert int(peak.split()[1]) * 1024 < 2 * 1024**3


def test_the_projects_own_pixel_cap_holds_when_pillows_limit_is_switched_off(
    tmp_path: Path, hostile_folder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder, _, _ = hostile_folder
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    paths, skipped = find_images(str(folder))
    loaded, images, refused = load_images([p for p in paths if p.name in ("bomb.png", "a shirt.png")], "auto")
    assert [p.name for p in loaded] == ["a shirt.png"] and images.shape == (1, 1, 28, 28)
    (bomb,) = refused
    assert bomb.path.name == "bomb.png"
    assert "40000 x 40000" in bomb.reason and f"{MAX_PIXELS // 1_000_000}-megapixel" in bomb.reason


def test_randomly_damaged_files_are_skipped_never_raised(tmp_path: Path) -> None:
    """Pillow's decoders raise many kinds of errors on damaged data; none may stop predict."""
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 60).convert("RGB").save(buffer, "JPEG")
    sources = {"png": good_png(77), "jpg": buffer.getvalue()}
    rng = random.Random(0)
    paths = []
    for i in range(120):
        kind = "png" if i % 2 else "jpg"
        data = bytearray(sources[kind])
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        path = tmp_path / f"{i:03d}.{kind}"
        path.write_bytes(bytes(data))
        paths.append(path)
    (tmp_path / "good.png").write_bytes(good_png(10))
    loaded, images, refused = load_images([*paths, tmp_path / "good.png"], "auto")
    assert len(loaded) + len(refused) == len(paths) + 1 and len(images) == len(loaded)
    assert tmp_path / "good.png" in loaded
    assert all(r.reason for r in refused)


def test_an_undecodable_file_name_gets_its_row(
    tmp_path: Path, trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A Linux file name need not be UTF-8: the CSV stays valid UTF-8 and the row is still written."""
    folder = tmp_path / "photos"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as handle:
        handle.write(good_png(60))
    output = tmp_path / "out.csv"
    run_main(
        [
            "predict",
            f"--ckpt_path={trained_checkpoint}",
            f"--data.predict_path={folder}",
            "--trainer.enable_progress_bar=false",
            f"--predictions.output={output}",
        ],
        tmp_path,
        monkeypatch,
    )
    (row,) = list(csv.DictReader(open(output, newline="", encoding="utf-8")))
    assert row["path"].endswith("caf\\xe9.png") and row["class"]
