"""``python -m fmnist_pl serve``: a trained checkpoint as an HTTP service on LitServe, with a page to try it.

``POST /predict`` takes one picture (the raw bytes of a PNG, JPEG, GIF, BMP or WebP, or a multipart
form's file) and answers with the class, all ten probabilities and the 28x28 picture the model saw.
``GET /`` is a page for people, ``/health`` and ``/info`` are LitServe's, ``/docs`` documents the API.
The checkpoint is read as ``predict`` reads it, and so are the pictures. Requests are batched by
LitServe; with ``LIT_SERVER_API_KEY`` set, every route but the page asks for it as ``X-API-Key``.
SIGTERM or Ctrl-C stops taking requests, answers those in flight and exits with status 0.

Needs the optional extra: ``pip install '.[serve]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fmnist_pl.checkpoints import load_checkpoint
from fmnist_pl.errors import ConfigError, UserError, check_at_least, check_range
from fmnist_pl.runs import newest_checkpoint

RUNS = Path("lightning_logs")
MIN_API_SERVERS = 2
HOSTS = {"127.0.0.1": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # where to bind: where to ask /health


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_pl serve",
        description="Serve a trained checkpoint over HTTP (LitServe), with a page to try it.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ckpt_path",
        default="best",
        help="the checkpoint to serve: a .ckpt file, or best (default) or last of the newest run in lightning_logs/",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=tuple(HOSTS),
        help="127.0.0.1 (default): this machine only; 0.0.0.0 or :: every network interface (IPv4, IPv6)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--accelerator", choices=("auto", "cpu", "cuda"), default="auto", help="auto (default): a GPU when there is one"
    )
    parser.add_argument(
        "--devices", default="auto", help="how many GPUs, or auto (default: all); the CPU counts as one"
    )
    parser.add_argument("--workers_per_device", type=int, default=1, help="inference processes per device (default: 1)")
    parser.add_argument(
        "--api_servers",
        type=int,
        help="HTTP processes, which read and decode the pictures (default: one an inference worker, at least 2)",
    )
    parser.add_argument(
        "--max_batch_size", type=int, default=32, help="at most this many requests in one forward pass (default: 32)"
    )
    parser.add_argument(
        "--batch_timeout",
        type=float,
        default=0.001,
        help="seconds a worker waits for a batch to fill before running what it has (default: 0.001)",
    )
    parser.add_argument(
        "--max_payload_mb", type=float, default=10.0, help="larger request bodies get 413 (default: 10 MiB)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a request may wait for a worker: then 504 (default: 30)"
    )
    parser.add_argument(
        "--fast_queue",
        action="store_true",
        help="LitServe's ZeroMQ for the workers' answers (requests still queue through multiprocessing)",
    )
    parser.add_argument(
        "--log_level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="LitServe's and uvicorn's logging; info adds a line a request (default: warning)",
    )
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Every option in range, and the devices there, before anything is loaded or listens."""
    check_range("--port", args.port, 1024, 65536)  # LitServe's own range: no privileged ports
    check_at_least("--workers_per_device", args.workers_per_device, 1)
    if args.api_servers is not None:
        check_at_least("--api_servers", args.api_servers, 1)
    check_at_least("--max_batch_size", args.max_batch_size, 1)
    check_at_least("--batch_timeout", args.batch_timeout, 0)
    check_at_least("--max_payload_mb", args.max_payload_mb, 0.001)
    if args.timeout <= args.batch_timeout:
        raise ConfigError(f"--timeout ({args.timeout} s) must be longer than --batch_timeout ({args.batch_timeout} s)")
    if args.devices != "auto":
        try:
            args.devices = int(args.devices)
        except ValueError:
            raise ConfigError(f"--devices must be a number of devices or auto, got {args.devices!r}") from None
        check_at_least("--devices", args.devices, 1)
    if args.accelerator == "cuda":
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError("--accelerator cuda: torch sees no CUDA GPU here; use --accelerator cpu (or auto)")
        if args.devices != "auto" and args.devices > available:
            raise ConfigError(f"--devices {args.devices}: this machine has {available} CUDA GPU(s)")


def resolve_checkpoint(ckpt_path: str) -> Path:
    """``best`` or ``last`` of the newest run of any config in ``lightning_logs/``, or the file named."""
    if ckpt_path not in ("best", "last"):
        return Path(ckpt_path)
    return newest_checkpoint(
        RUNS,
        ckpt_path,
        runs="*/*",
        whose=f"in {RUNS}/",
        first="train one first (`python -m fmnist_pl fit --config configs/dropout.yaml`)",
    )


def check_port_free(host: str, port: int) -> None:
    """Raise ``ConfigError`` when ``host:port`` cannot be listened on (as uvicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); "
                "stop what uses it, or give another --port"
            ) from None


def main(argv: list[str]) -> None:
    """Check the options and the checkpoint, then serve until SIGTERM or Ctrl-C."""
    args = build_parser().parse_args(argv)
    check_options(args)
    if importlib.util.find_spec("litserve") is None:
        raise UserError("serve needs the optional extra: pip install '.[serve]' (litserve is missing)")
    check_port_free(args.host, args.port)
    from fmnist_pl.trained import trained_network

    path = resolve_checkpoint(args.ckpt_path)
    network = trained_network(path)
    checkpoint = load_checkpoint(path)
    print(f"serve: {path}", file=sys.stderr, flush=True)
    serve(args, path, checkpoint, network)


def serve(args: argparse.Namespace, path: Path, checkpoint: dict[str, Any], network: torch.nn.Module) -> None:
    import litserve as ls

    from fmnist_pl.serve import model_card
    from fmnist_pl.serve.api import FashionAPI
    from fmnist_pl.serve.routes import install_routes

    examples, no_examples = model_card.examples(checkpoint)
    if no_examples:
        print(f"serve: the page offers no test images: {no_examples}", file=sys.stderr)
    api = FashionAPI(network, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(
        api,
        accelerator=args.accelerator,
        devices=args.devices,
        workers_per_device=args.workers_per_device,
        timeout=args.timeout,
        max_payload_size=int(args.max_payload_mb * 1024 * 1024),
        fast_queue=args.fast_queue,
        restart_workers=True,
        model_metadata=model_card.info(path, checkpoint),
    )
    install_routes(server, api, model_card.identity(path, checkpoint), model_card.class_names(checkpoint), examples)
    # LitServe's default is one HTTP process an inference worker. Each queues its requests through a
    # multiprocessing manager, one round trip at a time, which keeps a single one from using a core:
    # two served 1.1-1.65x the requests of one on 2 CPU cores (benchmarks/serve_throughput.py, docs/serving.md).
    api_servers = args.api_servers or max(MIN_API_SERVERS, len(server.devices) * args.workers_per_device)
    _stop_gracefully_on(server, signal.SIGTERM, signal.SIGINT)
    display = f"[{args.host}]" if ":" in args.host else args.host
    asked = f"[{HOSTS[args.host]}]" if ":" in args.host else HOSTS[args.host]
    _announce_when_ready(f"http://{display}:{args.port}/", f"http://{asked}:{args.port}/health")
    try:
        server.run(
            host=args.host,
            port=args.port,
            num_api_servers=api_servers,
            log_level=args.log_level,
            generate_client_file=False,
        )
    except KeyboardInterrupt:
        print("serve: stopped while starting", file=sys.stderr)
        return
    print("serve: stopped", file=sys.stderr)


def _stop_gracefully_on(server: Any, *signals: signal.Signals) -> None:
    """SIGTERM and Ctrl-C shut the service down as LitServe's ``/shutdown`` route would.

    LitServe's other processes are forked from this one and inherit the handler, where it does
    nothing: a signal sent to all of them at once (Ctrl-C, ``systemctl stop``, ``pkill``) must not
    stop the queue manager under requests still in flight, and uvicorn replaces the handler in the
    HTTP servers while they serve (its own graceful stop), then raises the signal again once they
    have drained, after which they end by themselves. This process then stops them in order.
    """
    from fmnist_pl.serve.litserve_internals import request_shutdown

    owner = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            return
        if not request_shutdown(server):
            raise KeyboardInterrupt  # still starting: nothing to drain

    for each in signals:
        signal.signal(each, stop)


def _announce_when_ready(url: str, health_url: str) -> None:
    # Started before LitServe forks its HTTP servers, as a process: no thread of this one is running then.
    subprocess.Popen([sys.executable, "-m", "fmnist_pl.serve.ready", url, health_url], stdin=subprocess.DEVNULL)
