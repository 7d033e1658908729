"""Weights out: ONNX and ``torch.export`` programs of the FC form and the dense form.

The FC form takes crops of the checkpoint's ``crop_size`` (batch size free) and returns logits
(N, classes). The dense form is ``DenseVGG`` (FC6-FC8 as real convolutions) and takes images of
any height and width >= ``crop_size``, returning the class score map (N, classes, h, w), the
paper's Section 3.2 evaluation. Both go through ``torch.export`` with dynamic shapes, so
``export_program`` is also the ``torch.export`` route. The ONNX file's metadata carries the
preprocessing, class names and build arguments as JSON (key ``verydeep``); with
``include_preprocess`` the graph itself takes RGB pixels in 0-255 instead of normalised input.

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.weights.export import export_program
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).eval()
    >>> prog = export_program(net, "dense")
    >>> prog.module()(torch.randn(1, 3, 64, 96)).shape
    torch.Size([1, 3, 2, 3])
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from ...data.preprocess import Preprocess
from ...models.dense import to_dense
from ...models.vgg import VGG
from ..checkpoint import Meta, box_head, load_model
from ..files import output_target, replacing

FORMS = ("fc", "dense")
MAX_SIDE = 8192  # upper bound for the dynamic height/width (torch.export wants a finite range)


class WithPreprocess(nn.Module):
    """``net(prep(x))`` for x = RGB pixels 0-255 (float, NCHW); buffers, so it exports."""

    def __init__(self, net: nn.Module, prep: Preprocess) -> None:
        super().__init__()
        self.net, self.scale, self.bgr = net, prep.pixel_range / 255.0, prep.bgr
        self.register_buffer("mean", torch.tensor(prep.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        if self.bgr:
            x = x.flip(1)
        return self.net((x - self.mean) / self.std)


def _module(model: VGG, form: str, prep: Preprocess | None) -> nn.Module:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose fc or dense")
    net: nn.Module = to_dense(model) if form == "dense" else model
    return (WithPreprocess(net, prep) if prep is not None else net).eval()


def _shapes(model: VGG, form: str) -> tuple[torch.Tensor, dict]:
    size = model.crop_size
    # the dense example is larger than the minimum: export specialises dimensions of size 1
    side = size + 64 if form == "dense" else size
    example = torch.randn(2, model.in_channels, side, side)
    dims = {0: Dim("batch", min=1, max=4096)}
    if form == "dense":
        dims |= {2: Dim("height", min=size, max=MAX_SIDE), 3: Dim("width", min=size, max=MAX_SIDE)}
    return example, {"x": dims}


def export_program(model: VGG, form: str = "dense", prep: Preprocess | None = None) -> ExportedProgram:
    """``torch.export`` of the FC form (dynamic batch) or dense form (dynamic batch, H, W)."""
    module = _module(model.eval(), form, prep)
    example, shapes = _shapes(model, form)
    # Without this, export specialises sizes that may be 1 (the score map at crop_size) and
    # rejects the dynamic range; torch.onnx's own capture strategies set the same flag.
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        return torch.export.export(module, (example,), dynamic_shapes=shapes)


def export_onnx(
    model: VGG,
    out: str | Path,
    form: str = "dense",
    meta: Meta | None = None,
    include_preprocess: bool = False,
    opset: int = 18,
) -> Path:
    """Write ``model`` as ONNX (input ``image``; output ``scores``, or ``boxes`` for a
    localisation net, whose head the metadata records); returns the path."""
    if Path(out).suffix != ".onnx":
        raise ValueError(f"output must be a .onnx file, got {out}")
    out = output_target(out)  # a symlink to a file is written through; devices etc. refused
    meta = meta or Meta()
    prep = meta.prep if include_preprocess else None
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; fail with a clear line)
    except ImportError:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install 'verydeep[onnx]'") from None
    program = torch.onnx.export(
        export_program(model, form, prep),
        input_names=["image"],
        output_names=["boxes" if box_head(meta) else "scores"],
        opset_version=opset,
        external_data=False,
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    info = asdict(meta) | {"model": model.build_kwargs, "form": form, "input_is_pixels": include_preprocess}
    program.model.metadata_props["verydeep"] = json.dumps(info)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:  # like checkpoints: the old file or the complete new one
        # one self-contained file: VGG-19 is 575 MB, under protobuf's 2 GB limit
        program.save(str(tmp), external_data=False)
    return out


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    form: str = "dense",
    include_preprocess: bool = False,
    check: bool = False,
) -> float | None:
    """``verydeep export``: a checkpoint to ONNX, preprocessing and classes in the metadata.

    With ``check``, returns the largest |onnxruntime - PyTorch| on random input (two sizes for
    the dense form) and raises ValueError above 1e-4.
    """
    model, meta = load_model(ckpt)
    export_onnx(model, out, form, meta, include_preprocess)
    if not check:
        return None
    size = model.crop_size
    worst = check_onnx(model, out, [size, size + 64], form, meta.prep if include_preprocess else None)
    if worst > 1e-4:
        raise ValueError(f"{out}: onnxruntime differs from PyTorch by {worst:.2e}")
    return worst


def check_onnx(
    model: VGG,
    path: str | Path,
    sizes: list[int] | None = None,
    form: str = "dense",
    prep: Preprocess | None = None,
) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs at ``sizes`` (dense) or crop size."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("--check needs onnxruntime: pip install 'verydeep[onnx]'") from None

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = _module(model.eval(), form, prep)
    worst = 0.0
    for size in sizes if form == "dense" and sizes else [model.crop_size]:
        # non-square in the dense form, so a swapped height/width would show
        shape = (1, model.in_channels, size, size + 32 * (form == "dense"))
        x = torch.rand(shape) * 255 if prep is not None else torch.randn(shape)  # pixels or normalised
        with torch.no_grad():
            want = module(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        worst = max(worst, float(abs(got - want).max()))
    return worst
