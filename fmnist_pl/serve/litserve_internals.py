"""The places where the service reaches past LitServe's public API (0.2.19), kept here so that a
LitServe release that moves one breaks it in one file, with a clear error.

- Its request handler, which queues a payload for the inference workers and waits for the answer
  (timeouts, worker restarts and error statuses included): the service's own ``POST /predict``
  decodes the picture first, then hands the pixels to it.
- Its shutdown event, which its own ``/shutdown`` route sets: a SIGTERM sets it too, so the service
  stops as after that route (HTTP servers drained first, inference workers last).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import litserve as ls
from fastapi import HTTPException

try:
    from litserve.server import RegularRequestHandler
except ImportError as err:  # pragma: no cover - only with another LitServe
    raise ImportError(f"this LitServe ({ls.__version__}) has no litserve.server.RegularRequestHandler: {err}") from err


def queue_for_workers(
    server: ls.LitServer, api: ls.LitAPI, deadline_s: float
) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """An async function that sends one payload to ``api``'s inference workers and returns their answer,
    raising ``HTTPException``: LitServe's for a worker's error or a request that waited too long in the
    queue, and 504 when no answer came within ``deadline_s``.

    LitServe's handler waits for the answer without a limit, and an answer can be lost: the request a
    worker was taking from the queue when it was killed, or every request while no worker runs. The
    deadline turns that into a 504 rather than a connection held open forever.
    """
    handler = RegularRequestHandler(api, server)

    async def send(payload: dict[str, Any]) -> Any:
        try:
            return await asyncio.wait_for(handler.handle_request(payload, dict), deadline_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no inference worker answered within {deadline_s:g} s (--timeout)") from None

    return send


def request_shutdown(server: ls.LitServer) -> bool:
    """Ask a running ``server`` to shut down gracefully, as its ``/shutdown`` route would; False while
    it has not started yet (nothing to drain).

    Safe in a signal handler: the event is a multiprocessing proxy that the interrupted main thread
    may be waiting on, so it is set from a thread of its own (a proxy per thread).
    """
    event = getattr(server, "_shutdown_event", None)
    if event is None:
        return False
    threading.Thread(target=event.set, name="serve-shutdown").start()
    return True
