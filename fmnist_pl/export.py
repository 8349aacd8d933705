"""``python -m fmnist_pl export --ckpt_path CKPT --output model.onnx``: one self-contained ONNX file.

The exported graph takes raw images ``(N, 1, 28, 28)`` in [0, 1] (N dynamic) and returns logits:
the normalization the model was trained with is folded in, so a deployment needs nothing from
this project. The class names go into the model's metadata (``class_names``, JSON). Before the file
appears under its name, onnxruntime runs it on the whole test split and it must agree with PyTorch
(max absolute logit difference at most 1e-4, the same class on at least 99.9% of the images).

Needs the optional extra: ``pip install '.[export]'`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fmnist_pl.atomic import atomic_path
from fmnist_pl.checkpoints import load_checkpoint
from fmnist_pl.data import sets
from fmnist_pl.data.files import ensure_files, read_split
from fmnist_pl.errors import UserError
from fmnist_pl.model import Normalized
from fmnist_pl.pixels import IMAGE_SHAPE, to_unit
from fmnist_pl.trained import trained_network

MAX_LOGIT_DIFFERENCE = 1e-4
MIN_AGREEMENT = 0.999


def export_onnx(
    model: Normalized,
    output: Path,
    class_names: Sequence[str],
    check_images: torch.Tensor,
    check_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Write ``output`` atomically, ``class_names`` in its metadata, after onnxruntime agrees with PyTorch
    on ``check_images``; return the check (with ``check_labels``, both runtimes' accuracy on them too)."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise UserError(f"export needs the optional extra: pip install '.[export]' ({err.name} is missing)") from None
    with atomic_path(output) as tmp:
        example = torch.zeros(2, *IMAGE_SHAPE)
        batch = torch.export.Dim("batch")
        # torch's dynamo exporter: dynamic_shapes keys name forward()'s arguments; one file, no
        # external-data companion.
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes={"images": {0: batch}},
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "class_names", json.dumps(list(class_names))
        onnx.save(proto, str(tmp))
        check = compare_with_onnxruntime(model, tmp, check_images, onnxruntime, check_labels)
        if check["max_abs_diff"] > MAX_LOGIT_DIFFERENCE or check["agreement"] < MIN_AGREEMENT:
            raise UserError(
                f"export check failed: max |logit difference| {check['max_abs_diff']:.2e} "
                f"(allowed {MAX_LOGIT_DIFFERENCE}), "
                f"same class on {100 * check['agreement']:.2f}% (needed {100 * MIN_AGREEMENT}%); {output} not written"
            )
    return check


def compare_with_onnxruntime(
    model: nn.Module, path: Path, images: torch.Tensor, onnxruntime, labels: torch.Tensor | None = None
) -> dict[str, float]:
    """Max absolute logit difference and class agreement between PyTorch and onnxruntime on ``images``,
    and with ``labels`` the accuracy of each."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = torch.cat([model(chunk) for chunk in images.split(1000)])
    actual = torch.cat(
        [torch.from_numpy(session.run(["logits"], {"images": chunk.numpy()})[0]) for chunk in images.split(1000)]
    )
    check = {
        "images": float(len(images)),
        "max_abs_diff": float((actual - expected).abs().max()),
        "agreement": float((actual.argmax(1) == expected.argmax(1)).double().mean()),
    }
    if labels is not None:
        check["pytorch_accuracy"] = float((expected.argmax(1) == labels).double().mean())
        check["onnxruntime_accuracy"] = float((actual.argmax(1) == labels).double().mean())
    return check


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(prog="python -m fmnist_pl export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="checkpoint to export")
    parser.add_argument(
        "--output", type=Path, default=Path("model.onnx"), help="ONNX file to write (default: model.onnx)"
    )
    parser.add_argument(
        "--data.data_dir", dest="data_dir", help="where the test images for the check are (default: the checkpoint's)"
    )
    args = parser.parse_args(argv)
    model = trained_network(args.ckpt_path)
    data_hparams = load_checkpoint(args.ckpt_path).get("datamodule_hyper_parameters", {})
    data_dir = args.data_dir or data_hparams.get("data_dir", "data")
    dataset = sets.of_hparams(data_hparams)
    folder = ensure_files(data_dir, dataset, data_hparams.get("source_dir"), files=dataset.files["test"])
    pixels, labels = read_split(folder, dataset, "test")
    images = to_unit(pixels.unsqueeze(1))
    check = export_onnx(model, args.output, dataset.names("en"), images, labels.long())
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB): onnxruntime vs PyTorch on "
        f"{int(check['images'])} test images: max |logit difference| {check['max_abs_diff']:.2e}, "
        f"same class on {100 * check['agreement']:.2f}%; test accuracy {100 * check['onnxruntime_accuracy']:.2f}% "
        f"through onnxruntime ({100 * check['pytorch_accuracy']:.2f}% in PyTorch)"
    )
    return args.output
