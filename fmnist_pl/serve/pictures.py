"""An HTTP request's picture as the model sees it: the upload read from the body, decoded and fitted
into 28x28 exactly as ``predict`` reads image files, or a clear 4xx error.

Everything stays in memory: no request writes a file (a multipart upload is parsed from the body's
bytes, which the payload limit has already bounded).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
from dataclasses import dataclass

import torch
from fastapi import HTTPException
from PIL import Image

from fmnist_pl.data.image_files import (
    IMAGE_SUFFIXES,
    Invert,
    is_not_an_image,
    is_too_large,
    load_image,
    why_unreadable,
)
from fmnist_pl.pixels import IMAGE_SHAPE

FORMATS = "PNG, JPEG, GIF, BMP or WebP"


@dataclass(frozen=True)
class Picture:
    """A request's image as the model sees it: 28x28 grayscale, light object on black."""

    pixels: bytes  # 784 uint8 values, row by row: what the inference worker receives
    png: bytes  # the same pixels as a small PNG, shown back to the client

    @classmethod
    def from_pixels(cls, pixels: bytes) -> Picture:
        return cls(pixels, png_of(pixels))

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


def upload_bytes(content_type: str, body: bytes) -> bytes:
    """The image file a request carries: the whole body, or the first file of a multipart form.

    Raises:
        HTTPException: 400 when there is no image in it at all.
    """
    if content_type.lower().startswith("multipart/form-data"):
        body = _first_file(content_type, body)
    if not body:
        raise HTTPException(
            400,
            "the request holds no image: send the file's bytes as the body (Content-Type image/png, ...) "
            "or as the file of a multipart form",
        )
    return body


def prepare(data: bytes, invert: Invert = "auto") -> Picture:
    """Decode ``data`` with ``predict``'s own reader (:func:`~fmnist_pl.data.image_files.load_image`).

    Raises:
        HTTPException: 415 not an image; 413 more pixels than the reader allows (a decompression
            bomb); 422 a damaged or truncated picture.
    """
    try:
        image = load_image(io.BytesIO(data), invert)
    # Pillow's decoders raise many kinds of error on damaged data (OSError, SyntaxError,
    # ValueError, EOFError, zlib.error, ...): each is the client's picture, never the server.
    except Exception as err:
        reason = why_unreadable(err, empty=not data)
        if is_not_an_image(err):
            raise HTTPException(415, f"not an image: {reason}; send a {FORMATS} file") from None
        if is_too_large(err):
            raise HTTPException(413, f"the picture is too large: {reason}") from None
        raise HTTPException(422, f"the picture cannot be used: {reason}") from None
    pixels = image.mul(255).round().to(torch.uint8).numpy().tobytes()
    return Picture.from_pixels(pixels)


def png_of(pixels: bytes) -> bytes:
    """784 grayscale bytes, row by row, as a 28x28 PNG."""
    buffer = io.BytesIO()
    Image.frombytes("L", (IMAGE_SHAPE[2], IMAGE_SHAPE[1]), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _first_file(content_type: str, body: bytes) -> bytes:
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not form.is_multipart():
        raise HTTPException(400, "a multipart form without parts: add the image as a file field")
    for part in form.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    raise HTTPException(400, f"the multipart form has no file: add one ({', '.join(IMAGE_SUFFIXES)})")
