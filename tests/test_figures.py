"""Pictures: the show command's PNGs, Hangul fonts, and what the callback writes for TensorBoard."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.ft2font
import numpy as np
import pytest
import torch
import yaml
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist_pl import plots
from fmnist_pl.callbacks.figures import tag_names
from fmnist_pl.data.augmentations import Augmentations
from fmnist_pl.data.device_loader import DeviceLoader
from fmnist_pl.data.epochs import EpochSampler
from fmnist_pl.data.sets import FASHION_MNIST
from fmnist_pl.show import build_parser, shown_pixels
from fmnist_pl.show import main as show

from .helpers import SMALL_RUN, hparams_sessions, run_main


def read_png(path: Path) -> np.ndarray:
    assert path.is_file()
    return mpimg.imread(path)


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels[..., :3].var() > 0.01  # a blank or single-colour picture has about 0


def test_show_grid_and_single_image(tmp_path: Path, real_data_dir: Path) -> None:
    grid = show(["--out", str(tmp_path / "grid.png"), "--data.data_dir", str(real_data_dir), "--n", "16"])
    pixels = read_png(grid)
    assert pixels.shape[:2] == (420, 1280)  # 2 rows x 8 columns at 1.9 x 1.6 inches + 0.4 for the title, 100 dpi
    assert_not_blank(pixels)
    one = show(
        ["--out", str(tmp_path / "one.png"), "--data.data_dir", str(real_data_dir), "--index", "1", "--split", "test"]
    )
    pixels = read_png(one)
    assert pixels.shape[:2] == (440, 400)
    assert_not_blank(pixels)


def test_augment_flips_some_images(tmp_path: Path, real_data_dir: Path) -> None:
    plain = read_png(show(["--out", str(tmp_path / "a.png"), "--data.data_dir", str(real_data_dir), "--n", "8"]))
    flipped = read_png(
        show(["--out", str(tmp_path / "b.png"), "--data.data_dir", str(real_data_dir), "--n", "8", "--augment"])
    )
    assert plain.shape == flipped.shape and not np.array_equal(plain, flipped)


def test_show_augment_shows_what_the_training_loader_makes_of_the_same_images() -> None:
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    args = build_parser().parse_args(["--augment", "--shift", "2", "--seed", "5"])
    loader = DeviceLoader(images, torch.arange(40), EpochSampler(40, False, 5), 40, Augmentations.of(True, 2))
    trained_on = (next(iter(loader))[0][:, 0] * 255).round().to(torch.uint8)
    assert torch.equal(shown_pixels(args, images), trained_on) and not torch.equal(trained_on, images)


def test_korean_names_use_a_hangul_font_when_installed() -> None:
    font = plots.hangul_font()
    if font is None:
        pytest.skip("no font with Hangul here: apt-get install fonts-nanum (CI installs it)")
    names, chosen = plots.class_names(FASHION_MNIST, "ko")
    assert names == FASHION_MNIST.names("ko")
    # The font chosen draws every character of every Korean class name.
    charmap = matplotlib.ft2font.FT2Font(chosen).get_charmap()
    assert all(ord(char) in charmap for name in names for char in name if not char.isascii())


def test_korean_grid_draws_every_glyph_with_the_pip_font_alone(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a fresh machine with no system font with Hangul: the font search finds none, so the
    # NanumGothic of the koreanize-matplotlib dependency must serve.
    monkeypatch.setattr(plots.font_manager, "findSystemFonts", lambda *args, **kwargs: [])
    plots.hangul_font.cache_clear(), plots.class_names.cache_clear()
    try:
        names, font = plots.class_names(FASHION_MNIST, "ko")
        assert (
            names == FASHION_MNIST.names("ko")
            and font == plots.bundled_hangul_font()
            and "koreanize_matplotlib" in font
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grid = show(
                ["--out", str(tmp_path / "ko.png"), "--data.data_dir", str(real_data_dir), "--n", "16", "--lang", "ko"]
            )
        assert not [w for w in caught if "missing from font" in str(w.message)]
        assert_not_blank(read_png(grid))
    finally:
        plots.hangul_font.cache_clear(), plots.class_names.cache_clear()


def test_korean_falls_back_to_english_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fonts cannot be uninstalled for one test, so the font search is made to find none.
    plots.class_names.cache_clear()
    monkeypatch.setattr(plots, "hangul_font", lambda: None)  # no system font and no pip font
    with pytest.warns(UserWarning, match="no font with Hangul"):
        names, font = plots.class_names(FASHION_MNIST, "ko")
    assert names == FASHION_MNIST.names("en") and font is None
    plots.class_names.cache_clear()


def test_show_without_display_or_out_writes_into_lightning_logs(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    run_main(["show", "--data.data_dir", str(real_data_dir), "--n", "8"], tmp_path, monkeypatch)
    written = Path("lightning_logs") / "show" / "train-first8-en.png"
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    assert_not_blank(read_png(tmp_path / written))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lightning_logs"]


@pytest.mark.parametrize("count", [1, 8, 64, 200])
def test_a_grid_title_stays_clear_of_the_images(count: int) -> None:
    images = np.zeros((count, 28, 28), dtype=np.float32)
    figure = plots.image_grid(images, ["T-shirt/top"] * count, None, title=f"train, first {count}")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    (title,) = [
        text.get_window_extent(renderer) for text in figure.findobj(Text) if text.get_text().startswith("train")
    ]
    (axis,) = figure.axes
    assert title.y0 >= axis.get_window_extent(renderer).y1  # above the grid
    assert title.y1 <= figure.bbox.y1  # and inside the picture


@pytest.mark.slow
def test_fit_and_test_write_figures_scalars_and_real_hparams(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_main(
        [
            "fit",
            *SMALL_RUN,
            f"--data.data_dir={real_data_dir}",
            "--figures.every_n_epochs=1",
            "--trainer.logger.init_args.log_graph=true",
        ],
        tmp_path,
        monkeypatch,
    )
    run_dir = tmp_path / "lightning_logs" / "default" / "version_0"
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    assert {"train/samples", "val/confusion_matrix", "val/misclassified"} <= set(tags["images"])
    assert {f"val/acc_per_class/{name}" for name in tag_names(FASHION_MNIST)} <= set(tags["scalars"])
    assert tags["graph"]
    final_val_acc = accumulator.Scalars("val/acc")[-1].value
    assert accumulator.Scalars("hp/val_acc")[-1].value == pytest.approx(final_val_acc)
    sessions = hparams_sessions(run_dir)
    assert sessions and sessions[-1]["model/net/dropout"].number_value == 0.0
    assert sessions[-1]["model/net"].string_value == "fmnist_pl.model.MLP"
    assert "hp_metric" not in tags["scalars"]

    run_main(
        ["test", f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "--trainer.enable_progress_bar=false"],
        tmp_path,
        monkeypatch,
    )
    test_dir = run_dir / "test-last"
    assert_not_blank(read_png(test_dir / "confusion_matrix_test.png"))
    report = (test_dir / "test_report.md").read_text().splitlines()
    rows = [line for line in report if line.startswith("| ") and not line.startswith(("| class", "| ---"))]
    assert len(rows) == 10 and sum(int(row.split("|")[4]) for row in rows) == 10000
    accumulator = EventAccumulator(str(test_dir), size_guidance={"images": 0})
    accumulator.Reload()
    assert "test/confusion_matrix" in accumulator.Tags()["images"]
    assert accumulator.Scalars("hp/test_acc")[-1].value == pytest.approx(accumulator.Scalars("test/acc")[-1].value)
    assert hparams_sessions(test_dir)
    # The same checkpoint tested again: a folder of its own, and the first report stays as it was.
    first_report = (test_dir / "test_report.md").read_bytes()
    run_main(
        ["test", f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "--trainer.enable_progress_bar=false"],
        tmp_path,
        monkeypatch,
    )
    assert (test_dir / "test_report.md").read_bytes() == first_report
    assert (run_dir / "test-last-2" / "test_report.md").read_bytes() == first_report
    assert len(list(test_dir.glob("events.out.tfevents.*"))) == 1


def test_figures_can_be_switched_off(tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_main(["fit", *SMALL_RUN, f"--data.data_dir={real_data_dir}", "--figures.enabled=false"], tmp_path, monkeypatch)
    run_dir = tmp_path / "lightning_logs" / "default" / "version_0"
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    accumulator.Reload()
    assert accumulator.Tags()["images"] == []
    assert not any(tag.startswith("val/acc_per_class") for tag in accumulator.Tags()["scalars"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["figures"]["enabled"] is False
