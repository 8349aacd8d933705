"""Requests per second and latency of ``serve`` under a bounded load from loopback, against the floor
of an HTTP service on this machine and against ``predict`` over the same files, in one run.

Each variant is a server of its own on a free loopback port (started, warmed up, loaded, stopped):
- ``serve``: ``python -m fmnist_pl serve`` as shipped (2 HTTP processes on the CPU, dynamic batching
  up to 32 in a 1 ms window);
- one option changed: ``serve-1-api-server`` (``--api_servers 1``, LitServe's own default),
  ``serve-no-batching`` (``--max_batch_size 1``), ``serve-5ms-window`` (``--batch_timeout 0.005``),
  ``serve-fast-queue`` (``--fast_queue``, ZeroMQ for the answers);
- ``floor``: ``benchmarks/serve_floor.py``, the smallest FastAPI/uvicorn endpoint doing the same
  decode and forward in one process, one request at a time.
The load is a fixed number of POSTs of PNG test images at each concurrency, from keep-alive
connections driven by one asyncio client in this process; with ``--rounds R`` each variant runs R
times, the variants taking turns, and the medians are printed. ``predict`` runs over the same files in
this process (images/s, imports excluded). Last, every file is sent to ``serve`` once and its answer
compared with ``predict``'s CSV.

    python benchmarks/serve_throughput.py --ckpt_path CKPT [--data-dir data] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from png_files import write_test_pngs
from predict_throughput import images_per_second

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "serve": [],
    "serve-1-api-server": ["--api_servers=1"],
    "serve-no-batching": ["--max_batch_size=1"],
    "serve-5ms-window": ["--batch_timeout=0.005"],
    "serve-fast-queue": ["--fast_queue"],
    "floor": None,
}
REQUEST_HEAD = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
BATCH_SIZE = re.compile(rb'"batch_size":(\d+)')


@dataclass
class Load:
    """What one bounded load measured."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    batch_sizes: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _client(port: int, bodies: list[bytes], todo: list[int], load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while todo:
            body = bodies[todo.pop() % len(bodies)]
            head = f"{REQUEST_HEAD}Content-Length: {len(body)}\r\n\r\n"
            start = time.perf_counter()
            writer.write(head.encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            status = int(status_line.split()[1])
            if status != 200:
                load.errors[status] += 1
                continue
            load.latencies.append(time.perf_counter() - start)
            if found := BATCH_SIZE.search(answer):
                load.batch_sizes[int(found.group(1))] += 1
    finally:
        writer.close()


def run_load(port: int, bodies: list[bytes], requests: int, concurrency: int) -> Load:
    """``requests`` POSTs from ``concurrency`` keep-alive connections at once."""

    async def drive() -> Load:
        todo = list(range(requests))
        load = Load(0.0)
        start = time.perf_counter()
        await asyncio.gather(*(_client(port, bodies, todo, load) for _ in range(concurrency)))
        load.seconds = time.perf_counter() - start
        return load

    return asyncio.run(drive())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(variant: str, ckpt: str, port: int) -> subprocess.Popen:
    options = VARIANTS[variant]
    if options is None:
        command = [sys.executable, str(REPO / "benchmarks" / "serve_floor.py"), f"--ckpt_path={ckpt}", f"--port={port}"]
    else:
        command = [sys.executable, "-m", "fmnist_pl", "serve", f"--ckpt_path={ckpt}", f"--port={port}", *options]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{variant} did not start: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{variant} was not ready in 120 s")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def predict_rate(ckpt: str, data_dir: str, folder: Path, out: Path) -> tuple[float, dict[str, dict[str, str]]]:
    """``predict``'s images/s over the files (in this process), and its CSV rows by file name."""
    rate = images_per_second(ckpt, data_dir, str(out), [f"--data.predict_path={folder}"], len(list(folder.iterdir())))
    with open(out / "predictions.csv", newline="", encoding="utf-8") as handle:
        return rate, {Path(row["path"]).name: row for row in csv.DictReader(handle)}


def compare_with_predict(port: int, folder: Path, rows: dict[str, dict[str, str]]) -> tuple[int, int, float]:
    """Files on which serve and predict give the same class, files, and the largest probability gap."""
    same, gap = 0, 0.0
    for path in sorted(folder.iterdir()):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=path.read_bytes(), headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        row = rows[path.name]
        same += answer["index"] == int(row["index"])
        for rank in range(3):
            gap = max(gap, abs(answer["probabilities"][rank]["probability"] - float(row[f"top{rank + 1}_probability"])))
    return same, len(rows), gap


def rate(rounds: list[Load]) -> float:
    return statistics.median(load.rate for load in rounds)


def p(rounds: list[Load], q: float) -> float:
    return statistics.median(load.percentile(q) for load in rounds)


def batches(rounds: list[Load]) -> str:
    sizes = sum((load.batch_sizes for load in rounds), Counter())
    if not sizes:
        return "-"
    mean = sum(size * count for size, count in sizes.items()) / sum(sizes.values())
    return f"{mean:.1f} / {max(sizes)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--requests", type=int, default=2000, help="requests in each load (default: 2000)")
    parser.add_argument("--images", type=int, default=200, help="test images written as PNG files (default: 200)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated (default: 1,8,32)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--rounds", type=int, default=1, help="each variant this many times, interleaved; medians printed (default: 1)"
    )
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # predict's LightningCLI gets its arguments from images_per_second alone
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        pngs = Path(tmp) / "pngs"
        bodies = [path.read_bytes() for path in write_test_pngs(args.data_dir, pngs, args.images)]
        loads: dict[tuple[str, int], list[Load]] = {}
        same = None
        for variant in [variant for _ in range(args.rounds) for variant in variants]:
            port = free_port()
            process = start(variant, args.ckpt_path, port)
            try:
                run_load(port, bodies, min(200, args.requests), max(concurrencies))  # warm-up
                for concurrency in concurrencies:
                    loads.setdefault((variant, concurrency), []).append(
                        run_load(port, bodies, args.requests, concurrency)
                    )
                if variant == "serve" and same is None:
                    images_per_s, rows = predict_rate(args.ckpt_path, args.data_dir, pngs, Path(tmp))
                    same = compare_with_predict(port, pngs, rows)
            finally:
                stop(process)
    print(
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}; {args.requests} requests a load, PNG test images; "
        f"medians of {args.rounds} round(s)"
    )
    header = f"{'variant':<18} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  batch mean / max"
    print(header)
    for (variant, concurrency), rounds in loads.items():
        errors = sum(sum(load.errors.values()) for load in rounds)
        print(
            f"{variant:<18} {concurrency:>4} {rate(rounds):>8.0f} {p(rounds, 0.5):>8.2f} "
            f"{p(rounds, 0.99):>8.2f} {errors:>6}  {batches(rounds)}"
        )
    for variant in variants:
        if variant == "floor" or "floor" not in variants:
            continue
        for concurrency in concurrencies:
            rounds, floor = loads[variant, concurrency], loads["floor", concurrency]
            print(
                f"{variant} vs floor at concurrency {concurrency}: {rate(rounds) / rate(floor):.2f}x req/s, "
                f"p99 {p(rounds, 0.99) / p(floor, 0.99):.2f}x"
            )
    if same is not None:
        print(
            f"predict over the same {len(bodies)} files: {images_per_s:,.0f} images/s (one command, imports excluded)"
        )
        agree, total, gap = same
        print(f"serve vs predict's CSV: same class on {agree}/{total} files, max |probability difference| {gap:.1e}")


if __name__ == "__main__":
    main()
