"""A real ``python -m fmnist_pl serve`` on a free loopback port, and a real HTTP client for it
(``http.client``, one connection a request)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .helpers import REPO

READY_S = 90  # importing Lightning, loading the checkpoint, starting a worker: ~10 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running service: its process, its port and what it printed so far."""

    process: subprocess.Popen
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Status and body (parsed when it is JSON) of one request on a connection of its own."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            if response.getheader("content-type", "").startswith("application/json"):
                return response.status, json.loads(data)
            return response.status, data
        finally:
            connection.close()

    def predict(self, data: bytes, content_type: str = "image/png", headers: dict[str, str] | None = None):
        return self.request("POST", "/predict", data, {"Content-Type": content_type, **(headers or {})})

    def predict_multipart(self, data: bytes, filename: str) -> tuple[int, Any]:
        boundary = "fmnist-test-boundary-7d1"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.predict(body, f"multipart/form-data; boundary={boundary}")

    def worker_pids(self) -> list[int]:
        """LitServe's inference workers: the children started by multiprocessing's spawn (a restarted
        one is a child of the thread that watches the workers, so every thread's children count)."""
        tasks = Path(f"/proc/{self.process.pid}/task").iterdir()
        children = [pid for task in tasks for pid in (task / "children").read_text().split()]
        return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextmanager
def running_server(
    checkpoint: Path, cwd: Path, options: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start the service on a free loopback port; yield it once it says it is serving; stop it (SIGTERM)."""
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist_pl", "serve", f"--ckpt_path={checkpoint}", f"--port={port}", *options],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(process, port)
    ready = threading.Event()

    def collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if line.startswith("serving "):
                ready.set()

    readers = [
        threading.Thread(target=collect, args=(process.stdout, server.stdout), daemon=True),
        threading.Thread(target=collect, args=(process.stderr, server.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + READY_S
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"serve did not start (exit {process.poll()}):\n{''.join(server.stderr)[-3000:]}")
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for reader in readers:
            reader.join(5)
