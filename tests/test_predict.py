"""predict on image files: formats, sizes, inversion, broken files, and the CSV it writes."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist_pl.data.files import raw_dir, read_split
from fmnist_pl.data.image_files import find_images, load_image
from fmnist_pl.data.sets import FASHION_MNIST
from fmnist_pl.errors import DataError
from fmnist_pl.trained import trained_network

from .helpers import exit_of_main, run_main


@pytest.fixture(scope="module")
def test_images(real_data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    folder = raw_dir(real_data_dir, FASHION_MNIST)
    images, labels = read_split(folder, FASHION_MNIST, "test")
    return images[:30], labels[:30]


@pytest.fixture
def checkpoint(trained_checkpoint: Path) -> Path:
    return trained_checkpoint


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_png_files_get_the_same_classes_as_the_tensors(
    tmp_path: Path, checkpoint: Path, test_images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    images, _ = test_images
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    run_main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={tmp_path / 'photos'}",
            "--trainer.enable_progress_bar=false",
            f"--predictions.output={tmp_path / 'out.csv'}",
        ],
        tmp_path,
        monkeypatch,
    )
    printed = capsys.readouterr()
    assert f"skipped {folder / 'broken.png'}" in printed.err
    assert f"wrote {tmp_path / 'out.csv'}: 30 images" in printed.out
    *rows, broken = read_csv(tmp_path / "out.csv")
    assert [Path(r["path"]).name for r in rows] == [f"{i:02d}.png" for i in range(30)]
    assert Path(broken["path"]).name == "broken.png" and broken["skipped"] == "not an image Pillow can read"
    model = trained_network(checkpoint)
    with torch.no_grad():
        expected = model(images.unsqueeze(1).float() / 255).softmax(1)
    assert [int(r["index"]) for r in rows] == expected.argmax(1).tolist()
    for row, probabilities in zip(rows, expected):
        assert float(row["probability"]) == pytest.approx(float(probabilities.max()), abs=1e-5)
        top = probabilities.topk(3)
        assert float(row["top1_probability"]) >= float(row["top2_probability"]) >= float(row["top3_probability"])
        assert float(row["top3_probability"]) == pytest.approx(float(top.values[2]), abs=1e-5)


def test_rgb_rgba_large_and_inverted_pictures_come_out_like_the_original(tmp_path: Path, test_images) -> None:
    original = test_images[0][0].float() / 255
    gray = Image.fromarray(test_images[0][0].numpy())
    rgb = gray.convert("RGB")
    rgba = gray.convert("RGBA")
    rgba.putalpha(Image.fromarray((test_images[0][0].numpy() > 0).astype(np.uint8) * 255))  # background transparent
    large = gray.resize((560, 560), Image.Resampling.NEAREST)
    photo = Image.eval(gray, lambda v: 255 - v).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    for name, picture in {"rgb.png": rgb, "rgba.png": rgba, "large.png": large, "photo.jpg": photo}.items():
        picture.save(tmp_path / name)
    torch.testing.assert_close(load_image(tmp_path / "rgb.png")[0], original)
    torch.testing.assert_close(load_image(tmp_path / "rgba.png")[0], original)
    assert (load_image(tmp_path / "large.png")[0] - original).abs().mean() < 0.02
    assert (load_image(tmp_path / "photo.jpg", invert="auto")[0] - original).abs().mean() < 0.05
    assert (load_image(tmp_path / "photo.jpg", invert="false")[0] - original).abs().mean() > 0.5
    assert load_image(tmp_path / "photo.jpg", invert="true").shape == (1, 28, 28)


def test_wide_pictures_are_fitted_and_centred(tmp_path: Path) -> None:
    Image.new("L", (100, 50), 255).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", invert="false")[0]
    assert image.shape == (28, 28)
    assert image[7:21].min() == 1.0 and image[:7].max() == 0.0 and image[21:].max() == 0.0


def test_globs_folders_and_files(tmp_path: Path) -> None:
    for name in ("a.png", "b.jpg", "c.txt", "sub/d.webp"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images(str(tmp_path))[0]] == ["a.png", "b.jpg", "d.webp"]
    assert [p.name for p in find_images(str(tmp_path / "*.png"))[0]] == ["a.png"]
    assert find_images(str(tmp_path / "c.txt")) == ([tmp_path / "c.txt"], [])
    with pytest.raises(DataError, match="matches no files"):
        find_images(str(tmp_path / "*.gif"))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), "the folder holds no image files"),
        (lambda p: None, "no such file or folder"),
        (lambda p: (p.mkdir(), (p / "x.png").write_bytes(b"junk")), "none of the 1 file(s) could be read"),
    ],
)
def test_nothing_to_predict_is_a_one_line_error(
    tmp_path: Path,
    checkpoint: Path,
    make,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    target = tmp_path / "in"
    make(target)
    monkeypatch.chdir(tmp_path)
    code, err = exit_of_main(["predict", f"--ckpt_path={checkpoint}", f"--data.predict_path={target}"], capsys)
    assert code == 2 and expected in err.strip().splitlines()[-1] and err.strip().splitlines()[-1].startswith("error: ")


def test_predict_warns_nothing_and_prints_its_summary_on_a_line_of_its_own(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_main(
            [
                "predict",
                f"--ckpt_path={checkpoint}",
                "--trainer.limit_predict_batches=2",
                "--trainer.enable_model_summary=false",
                f"--predictions.output={tmp_path / 'out.csv'}",
            ],
            tmp_path,
            monkeypatch,
        )
    lightning = [w for w in caught if "lightning" in w.filename or "batch indices" in str(w.message)]
    assert not lightning, [str(w.message) for w in lightning]
    out = capsys.readouterr().out
    assert "Predicting" in out  # the progress bar was drawn
    before, _ = out.split(f"wrote {tmp_path / 'out.csv'}:")
    # What a terminal shows before the summary on its line: after the last newline or carriage return.
    assert before.split("\n")[-1].split("\r")[-1] == ""
