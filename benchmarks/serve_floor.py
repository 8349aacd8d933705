"""The floor for ``serve_throughput.py``: the smallest FastAPI/uvicorn service doing the same work as
``serve`` in one process. It reads the picture with the service's own code, runs the same network on
it alone (no batching, no queue, no worker) and answers with the same JSON.

    python benchmarks/serve_floor.py --ckpt_path CKPT --port 8001
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from fmnist_pl.checkpoints import load_checkpoint
from fmnist_pl.serve.model_card import class_names, identity
from fmnist_pl.serve.pictures import prepare, upload_bytes
from fmnist_pl.serve.routes import prediction
from fmnist_pl.trained import trained_network


def build_app(ckpt_path: Path) -> FastAPI:
    network = trained_network(ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    model, names = identity(ckpt_path, checkpoint), class_names(checkpoint)
    app = FastAPI()

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        picture = prepare(upload_bytes(request.headers.get("content-type", ""), await request.body()))
        pixels = torch.frombuffer(bytearray(picture.pixels), dtype=torch.uint8).view(1, 1, 28, 28)
        with torch.inference_mode():
            probabilities = network(pixels.float().div_(255)).softmax(dim=1)[0].tolist()
        return prediction(probabilities, 1, picture, model, names)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(build_app(args.ckpt_path), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
