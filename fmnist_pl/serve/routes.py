"""The service's routes on LitServe's FastAPI app: the page at ``/``, ``POST /predict`` taking an image
file, and the test images the page offers.

LitServe's own ``POST /predict`` takes JSON (or a form) and has the inference worker decode it, in
the batch, where one bad picture fails the whole batch. This one reads and decodes the picture in
the HTTP process, then hands the worker its 784 pixels through LitServe's own request handler, so
batching, timeouts, worker restarts and the API key work as LitServe documents them.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import litserve as ls
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from fmnist_pl.serve.litserve_internals import queue_for_workers
from fmnist_pl.serve.pictures import Picture, prepare, upload_bytes
from fmnist_pl.serve.schema import PREDICT_BODY, PREDICT_ERRORS, Example, Prediction

PAGE = "page.html"


def install_routes(
    server: ls.LitServer,
    api: ls.LitAPI,
    identity: dict[str, Any],
    class_names: dict[str, tuple[str, ...]],
    examples: list[dict[str, Any]],
) -> None:
    """Put the page, ``POST /predict`` and ``GET /examples`` on ``server.app`` in place of LitServe's
    ``GET /`` (a line of text) and its ``POST /predict``; ``/health``, ``/info`` and ``/docs`` stay LitServe's.
    A prediction not answered within the server's ``timeout`` is a 504."""
    app = server.app
    _drop_routes(app, {("/", "GET"), (api.api_path, "POST")})
    authorized = [Depends(server.setup_auth())]  # LitServe's API key check (LIT_SERVER_API_KEY), or none
    to_workers = queue_for_workers(server, api, deadline_s=server.timeout)
    page = resources.files(__package__).joinpath(PAGE).read_bytes()

    @app.get("/", include_in_schema=False)
    async def show_page() -> HTMLResponse:
        """The page: no model data in it, so it needs no key (its requests send the one typed in)."""
        return HTMLResponse(page)

    @app.get("/examples", dependencies=authorized, response_model=list[Example])
    async def list_examples() -> list[dict[str, Any]]:
        """A dozen test images of the model's data set, with their true classes (none without a test split)."""
        return examples

    @app.post(
        api.api_path,
        dependencies=authorized,
        response_model=Prediction,
        responses=PREDICT_ERRORS,
        openapi_extra=PREDICT_BODY,
    )
    async def predict(request: Request) -> dict[str, Any]:
        """Classify one picture, read as ``predict`` reads image files (grayscale, inverted when its
        border is light, fitted into 28x28)."""
        data = upload_bytes(request.headers.get("content-type", ""), await request.body())
        picture = await run_in_threadpool(prepare, data)
        answer = await to_workers({"pixels": picture.pixels})
        return prediction(answer["probabilities"], answer["batch_size"], picture, identity, class_names)


def prediction(
    probabilities: list[float],
    batch_size: int,
    picture: Picture,
    identity: dict[str, Any],
    class_names: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """``POST /predict``'s answer (:class:`~fmnist_pl.serve.schema.Prediction`)."""
    ranked = sorted(range(len(probabilities)), key=lambda index: -probabilities[index])
    classes = [
        {
            "index": index,
            **{lang: names[index] for lang, names in class_names.items()},
            "probability": probabilities[index],
        }
        for index in ranked
    ]
    return {
        **classes[0],
        "probabilities": classes,
        "image_png": picture.png_base64,
        "model": identity,
        "batch_size": batch_size,
    }


def _drop_routes(app: FastAPI, dropped: set[tuple[str, str]]) -> None:
    app.router.routes = [
        route
        for route in app.router.routes
        if not any((getattr(route, "path", None), method) in dropped for method in getattr(route, "methods", ()))
    ]
