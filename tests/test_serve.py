"""serve: a real server on a loopback port, real HTTP requests, a real browser (Debian's chromium
through Playwright), bad input, a killed worker, SIGTERM during a burst, and the API key."""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import io
import os
import shutil
import signal
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from fmnist_pl.data.files import raw_dir, read_split
from fmnist_pl.data.image_files import load_image
from fmnist_pl.data.sets import FASHION_MNIST

from .helpers import exit_of_main, run_main
from .serving import Server, free_port, running_server
from .test_predict import read_csv

PAYLOAD_MB = 1  # the shared server's --max_payload_mb
TIMEOUT_S = 10  # and its --timeout


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """Test images as files of every format and mode predict and serve read: gray PNG, JPEG, GIF,
    BMP, WebP, RGBA, a large inverted photo, an animated GIF (two test images as frames)."""
    images, _ = read_split(raw_dir(real_data_dir, FASHION_MNIST), FASHION_MNIST, "test")
    folder = tmp_path_factory.mktemp("pictures")
    for i in range(8):
        Image.fromarray(images[i].numpy()).save(folder / f"gray{i}.png")
    for i, suffix in enumerate((".jpg", ".gif", ".bmp", ".webp"), start=8):
        Image.fromarray(images[i].numpy()).convert("RGB").save(folder / f"rgb{i}{suffix}")
    rgba = Image.fromarray(images[12].numpy()).convert("RGBA")
    rgba.putalpha(Image.fromarray(images[12].numpy()))
    rgba.save(folder / "rgba12.png")
    photo = Image.fromarray(255 - images[13].numpy()).resize((420, 600), Image.Resampling.BICUBIC)
    photo.save(folder / "photo13.jpg", quality=92)
    frames = [Image.fromarray(images[i].numpy()) for i in (14, 15)]
    frames[0].save(folder / "animated14.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return folder


@pytest.fixture(scope="module")
def predicted(pictures: Path, served_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """predict's CSV rows over the same files, by file name."""
    output = tmp_path_factory.mktemp("predicted") / "predictions.csv"
    with pytest.MonkeyPatch.context() as patch:
        run_main(
            [
                "predict",
                f"--ckpt_path={served_checkpoint}",
                f"--data.predict_path={pictures}",
                "--trainer.enable_progress_bar=false",
                f"--predictions.output={output}",
            ],
            output.parent,
            patch,
        )
    return {Path(row["path"]).name: row for row in read_csv(output)}


@pytest.fixture(scope="module")
def served_checkpoint(trained_checkpoint: Path) -> Path:
    """The small test run's checkpoint, or ``$FMNIST_SERVE_CHECKPOINT`` (a fully trained one makes the
    README's screenshot of the page)."""
    return Path(os.environ.get("FMNIST_SERVE_CHECKPOINT") or trained_checkpoint)


@pytest.fixture(scope="module")
def server(served_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """One running service for the module's tests (each pytest-xdist worker that runs some starts its own)."""
    with running_server(
        served_checkpoint,
        tmp_path_factory.mktemp("serve"),
        [f"--max_payload_mb={PAYLOAD_MB}", f"--timeout={TIMEOUT_S}", "--log_level=info"],
    ) as running:
        yield running


@pytest.mark.slow
def test_the_service_answers_as_predict_does(server: Server, pictures: Path, predicted: dict, served_checkpoint: Path):
    assert server.stderr[0] == f"serve: {served_checkpoint}\n"  # the checkpoint, named first
    assert any(line.startswith(f"serving {server.url} (the page; ") for line in server.stdout)
    files = sorted(pictures.iterdir())
    assert len(files) == len(predicted) == 15
    digest = hashlib.sha256(served_checkpoint.read_bytes()).hexdigest()
    for number, path in enumerate(files):
        data = path.read_bytes()
        status, answer = server.predict(data) if number % 2 else server.predict_multipart(data, path.name)
        assert status == 200, (path.name, answer)
        row = predicted[path.name]
        assert answer["index"] == int(row["index"]) and answer["en"] == row["class"]
        assert answer["ko"] == FASHION_MNIST.names("ko")[answer["index"]]
        assert abs(answer["probability"] - float(row["probability"])) <= 1e-5
        ranked = answer["probabilities"]
        assert [entry["probability"] for entry in ranked] == sorted((e["probability"] for e in ranked), reverse=True)
        assert sorted(entry["index"] for entry in ranked) == list(range(10))
        assert abs(sum(entry["probability"] for entry in ranked) - 1) < 1e-5
        for rank in range(3):
            assert ranked[rank]["en"] == row[f"top{rank + 1}_class"]
            assert abs(ranked[rank]["probability"] - float(row[f"top{rank + 1}_probability"])) <= 1e-5
        seen = Image.open(io.BytesIO(base64.b64decode(answer["image_png"])))
        assert seen.size == (28, 28) and seen.mode == "L"
        expected = load_image(path).mul(255).round().to(torch.uint8)[0]
        assert torch.equal(torch.frombuffer(bytearray(seen.tobytes()), dtype=torch.uint8).view(28, 28), expected)
        assert answer["model"]["checkpoint"] == served_checkpoint.name
        assert digest.startswith(answer["model"]["sha256"]) and len(answer["model"]["sha256"]) == 12
        assert 0 < answer["model"]["val_acc"] <= 1
        assert 1 <= answer["batch_size"] <= 32


@pytest.mark.slow
def test_health_info_docs_and_a_self_contained_page(server: Server, served_checkpoint: Path) -> None:
    assert server.request("GET", "/health") == (200, b"ok")
    status, info = server.request("GET", "/info")
    assert status == 200
    assert info["model"]["checkpoint"] == served_checkpoint.name
    assert info["model"]["classes"]["ko"][7] == "운동화"
    assert info["model"]["network"]["class_path"] == "fmnist_pl.model.MLP"
    assert info["model"]["network"]["init_args"]["dropout"] == 0.2
    assert info["server"]["max_payload_size"] == PAYLOAD_MB * 1024 * 1024
    status, schema = server.request("GET", "/openapi.json")
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert status == 200 and {"image/*", "multipart/form-data"} <= body.keys()
    assert {"400", "401", "413", "415", "422"} <= schema["paths"]["/predict"]["post"]["responses"].keys()
    assert server.request("GET", "/docs")[0] == 200
    status, page = server.request("GET", "/")
    assert status == 200 and b'<input type="file" id="file"' in page
    assert b"http://" not in page and b"https://" not in page  # nothing fetched from elsewhere: works offline
    status, examples = server.request("GET", "/examples")
    assert status == 200 and len(examples) == 12
    assert {example["label"] for example in examples} == set(range(10))  # every class among them


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb() -> bytes:
    """A 40,000 x 40,000 gray PNG header over a few bytes of data: 1.6 gigapixels once decoded."""
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 40_001 * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


@pytest.mark.slow
def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(server: Server, pictures: Path) -> None:
    good = (pictures / "gray0.png").read_bytes()
    jpeg = (pictures / "photo13.jpg").read_bytes()
    cases = {
        "text": (server.predict, b"name,class\nshirt,6\n", "text/csv", 415, "not an image"),
        "empty body": (server.predict, b"", "image/png", 400, "holds no image"),
        "truncated PNG": (server.predict, good[: len(good) // 2], "image/png", 422, "truncated"),
        "truncated JPEG": (server.predict, jpeg[: len(jpeg) // 3], "image/jpeg", 422, "truncated"),
        "decompression bomb": (server.predict, decompression_bomb(), "image/png", 413, "too large"),
        "over --max_payload_mb": (server.predict, os.urandom(PAYLOAD_MB * 1024 * 1024 + 1), "image/png", 413, "large"),
        "form without a file": (
            server.predict,
            b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            400,
            "no file",
        ),
    }
    for name, (send, data, content_type, expected, words) in cases.items():
        status, answer = send(data, content_type)
        assert status == expected and words in answer["detail"], (name, status, answer)
        assert "\n" not in answer["detail"]
        assert server.predict(good)[0] == 200, f"not serving after: {name}"
    status, answer = server.predict((pictures / "animated14.gif").read_bytes(), "image/gif")
    first_frame = Image.open(pictures / "animated14.gif").convert("L").tobytes()
    assert status == 200 and Image.open(io.BytesIO(base64.b64decode(answer["image_png"]))).tobytes() == first_frame


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_answers_again(server: Server, pictures: Path) -> None:
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    started = time.monotonic()
    statuses = []
    while time.monotonic() - started < 3 * TIMEOUT_S:
        statuses.append(server.predict((pictures / "gray1.png").read_bytes())[0])
        if statuses[-1] == 200:
            break
    # A request the dying worker was taking from the queue is lost inside LitServe: a 504 after --timeout.
    assert statuses[-1] == 200 and set(statuses) <= {200, 504}, (statuses, "".join(server.stdout[-20:]))
    assert server.worker_pids() and worker not in server.worker_pids()


DROPPED_FILE = """(data) => {
    const transfer = new DataTransfer();
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], "dropped.gif", { type: "image/gif" }));
    return transfer;
}"""


@pytest.mark.slow
def test_the_page_in_a_real_browser(server: Server, pictures: Path, predicted: dict, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium here: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    (tmp_path / "notes.txt").write_text("not a picture")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server.url)
        expect(page.locator("#examples button")).to_have_count(12)
        page.get_by_label("Choose an image file, or drop one here").set_input_files(pictures / "photo13.jpg")
        expect(page.locator("#result-class")).to_have_text(predicted["photo13.jpg"]["class"])
        expect(page.locator("#top li")).to_have_count(3)
        page.get_by_label("한국어").check()  # the toggle: the same answer in Korean
        expect(page.locator("#result-class")).to_have_text(
            FASHION_MNIST.names("ko")[int(predicted["photo13.jpg"]["index"])]
        )
        page.get_by_label("English").check()
        first = page.locator("#examples button").first
        first.focus()
        page.keyboard.press("Enter")  # usable with the keyboard
        expect(page.locator("#truth")).to_contain_text("True class: Ankle boot")
        page.locator("#file").set_input_files(tmp_path / "notes.txt")
        expect(page.locator("#error")).to_contain_text("not an image")
        expect(page.locator("#result")).to_be_hidden()
        dropped = page.evaluate_handle(DROPPED_FILE, base64.b64encode((pictures / "rgb9.gif").read_bytes()).decode())
        page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})  # a file dropped on the page
        expect(page.locator("#result-class")).to_have_text(predicted["rgb9.gif"]["class"])
        expect(page.locator("#error")).to_have_text("")
        page.locator("#examples button").nth(8).click()
        expect(page.locator("#truth")).to_contain_text("True class: Sneaker")
        page.screenshot(path=tmp_path / "page.png", full_page=True)
        browser.close()
    if os.environ.get("FMNIST_PAGE_SCREENSHOT"):  # how the README's picture is made
        shutil.copyfile(tmp_path / "page.png", os.environ["FMNIST_PAGE_SCREENSHOT"])


@pytest.mark.slow
def test_api_key_then_sigterm_during_a_burst(trained_checkpoint: Path, pictures: Path, tmp_path: Path) -> None:
    good = (pictures / "gray2.png").read_bytes()
    key = {"X-API-Key": "s3cret"}
    with running_server(trained_checkpoint, tmp_path, env={"LIT_SERVER_API_KEY": "s3cret"}) as keyed:
        assert keyed.predict(good)[0] == 401
        assert keyed.predict(good, headers={"X-API-Key": "wrong"})[0] == 401
        assert keyed.request("GET", "/info")[0] == 401
        assert keyed.request("GET", "/")[0] == 200  # the page holds no model data; its requests send the key
        assert keyed.predict(good, headers=key)[0] == 200
        outcomes: Counter = Counter()
        sent = threading.Event()

        def client() -> None:
            for _ in range(25):
                try:
                    status, _ = keyed.predict(good, headers=key)
                    outcomes[status] += 1
                except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as refused:
                    outcomes[type(refused).__name__] += 1
                sent.set()

        clients = [threading.Thread(target=client) for _ in range(8)]
        for each in clients:
            each.start()
        sent.wait(30)
        time.sleep(0.3)
        assert keyed.stop() == 0
        for each in clients:
            each.join(60)
        assert outcomes[200] >= 8, outcomes
        assert set(outcomes) <= {200, "ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected"}, outcomes
        assert keyed.stderr[-1] == "serve: stopped\n"


def test_startup_errors_are_one_line_before_anything_listens(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()
    tampered = torch.load(trained_checkpoint, weights_only=True)
    first = next(key for key in tampered["state_dict"] if key.endswith("weight"))
    tampered["state_dict"][first] = torch.zeros(3, 784)
    torch.save(tampered, tmp_path / "tampered.ckpt")
    cases = {
        "missing": ([f"--ckpt_path={tmp_path / 'none.ckpt'}"], "none.ckpt: no such file"),
        "tampered": ([f"--ckpt_path={tmp_path / 'tampered.ckpt'}"], f"size mismatch for {first}"),
        "no runs": ([], "--ckpt_path best: no earlier run in lightning_logs/ has a best-*.ckpt"),
        "batch": ([f"--ckpt_path={trained_checkpoint}", "--max_batch_size=0"], "--max_batch_size must be at least 1"),
    }
    for name, (options, words) in cases.items():
        code, err = exit_of_main(["serve", f"--port={port}", *options], capsys)
        assert code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, (name, err)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"something listens after: {name}"
    find_spec = importlib.util.find_spec
    with monkeypatch.context() as without_litserve:  # as where the serve extra is not installed
        without_litserve.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "litserve" else find_spec(name, *a)
        )
        code, err = exit_of_main(["serve", f"--port={port}", f"--ckpt_path={trained_checkpoint}"], capsys)
    assert code == 2 and err == "error: serve needs the optional extra: pip install '.[serve]' (litserve is missing)\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, err = exit_of_main(["serve", f"--port={port}", f"--ckpt_path={trained_checkpoint}"], capsys)
    assert code == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)" in err


def test_without_ckpt_path_the_newest_runs_best_checkpoint_is_served(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmnist_pl.serve.command import resolve_checkpoint

    for number, config in enumerate(("seed", "dropout", "fast")):
        folder = tmp_path / "lightning_logs" / config / "version_0" / "checkpoints"
        folder.mkdir(parents=True)
        for name in ("best-epoch01-acc0.5000.ckpt", "last.ckpt"):
            shutil.copyfile(trained_checkpoint, folder / name)
            os.utime(folder / name, ns=(number * 10**9, (number + (name == "last.ckpt")) * 10**9))
    os.utime(tmp_path / "lightning_logs/dropout/version_0/checkpoints/last.ckpt", ns=(9 * 10**9, 9 * 10**9))
    monkeypatch.chdir(tmp_path)
    newest = Path("lightning_logs/dropout/version_0/checkpoints")
    assert resolve_checkpoint("best") == newest / "best-epoch01-acc0.5000.ckpt"
    assert resolve_checkpoint("last") == newest / "last.ckpt"
