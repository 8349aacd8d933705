"""The JSON the service answers with, as pydantic models: FastAPI checks each response against them
and documents them at ``/docs``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fmnist_pl.serve.pictures import FORMATS


class ClassProbability(BaseModel):
    index: int = Field(description="The class's label, 0-9 in FashionMNIST's order")
    en: str = Field(description="Its English name")
    ko: str = Field(description="Its Korean name")
    probability: float


class ModelIdentity(BaseModel):
    checkpoint: str = Field(description="The checkpoint's file name")
    sha256: str = Field(description="The first hex digits of the checkpoint file's SHA-256")
    val_acc: float | None = Field(description="The run's val/acc when the checkpoint was written")


class Prediction(BaseModel):
    index: int = Field(description="The predicted class")
    en: str
    ko: str
    probability: float = Field(description="The predicted class's probability")
    probabilities: list[ClassProbability] = Field(description="All 10 classes, most probable first")
    image_png: str = Field(description="The 28x28 picture the model saw (grayscale PNG, base64)")
    model: ModelIdentity
    batch_size: int = Field(description="How many requests the network ran together with this one")


class Example(BaseModel):
    test_index: int = Field(description="The image's index in FashionMNIST's test split")
    label: int = Field(description="Its true class")
    en: str
    ko: str
    png_base64: str = Field(description="The 28x28 image as a grayscale PNG, base64")


class Problem(BaseModel):
    detail: str = Field(description="What is wrong, in one line")


PREDICT_ERRORS = {
    400: {"model": Problem, "description": "No image in the request (an empty body, a form without a file)"},
    401: {"model": Problem, "description": "A missing or wrong X-API-Key, when the server has LIT_SERVER_API_KEY"},
    413: {"model": Problem, "description": "A body over --max_payload_mb, or a picture of too many pixels"},
    415: {"model": Problem, "description": f"Not an image: send a {FORMATS} file"},
    422: {"model": Problem, "description": "A damaged or truncated picture"},
    504: {"model": Problem, "description": "No inference worker answered within --timeout"},
}

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": f"One {FORMATS} picture of any size and mode, as the raw body or as a multipart form's file",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
