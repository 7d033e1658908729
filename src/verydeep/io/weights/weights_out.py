"""Weights out: a checkpoint as a torchvision ``.pth``, a Keras ``.h5`` or a ``.caffemodel``.

Those formats carry no input convention of their own: a ``.pth`` is read as torchvision's (RGB
0-1, ImageNet mean and std), a ``.h5`` and a ``.caffemodel`` as Caffe's (BGR 0-255 minus the
mean pixel), by ``verydeep convert`` and by the toolkits themselves. ``fold_convention`` rewrites
conv1 so that the net expects the format's convention: a change of channel order, pixel range or
std is exact; a change of mean moves into conv1's bias, exact everywhere but the one-pixel border
where conv1 pads with zeros (zero then stands for another grey). ``write_weights`` folds and
writes in one call.

Example:
    >>> import os, tempfile, torch
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.io.weights.weights_out import fold_convention
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("A", 3, width_mult=0.125, fc_width=16, crop_size=32).eval()
    >>> paper = Preprocess((120.0, 110.0, 100.0))
    >>> bgr = Preprocess((100.0, 110.0, 120.0), bgr=True)
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> torch.allclose(net(paper(x)), fold_convention(net, paper, bgr)(bgr(x)), atol=1e-5)
    True
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import torch

from ...data.preprocess import Preprocess
from ...models.vgg import VGG
from ..checkpoint import load_model
from ..files import atomic_write, output_target, replacing
from .layout import FC_NAMES, feature_index

FORMATS = {".pth": "torchvision", ".pt": "torchvision", ".h5": "caffe", ".caffemodel": "caffe"}


def fold_convention(model: VGG, src: Preprocess, dst: Preprocess) -> VGG:
    """A copy of ``model`` whose conv1 takes ``dst``-normalised inputs and gives the scores
    ``model`` gives for the ``src``-normalised same images (see the module note on the border)."""
    if len(src.mean) != 3:
        raise ValueError("only 3-channel nets can be written in another toolkit's convention")
    order = [2, 1, 0] if src.bgr != dst.bgr else [0, 1, 2]  # dst channel of each src channel
    s_std, s_mean = torch.tensor(src.std), torch.tensor(src.mean)
    d_std, d_mean = torch.tensor(dst.std)[order], torch.tensor(dst.mean)[order]
    ratio = src.pixel_range / dst.pixel_range
    scale = d_std * ratio / s_std  # src input = scale * dst input (src order) + shift
    shift = (d_mean * ratio - s_mean) / s_std
    out = copy.deepcopy(model)
    conv = out.features[0]
    with torch.no_grad():
        w = conv.weight.double()
        conv.bias.add_((w * shift.view(1, 3, 1, 1)).sum((1, 2, 3)).to(conv.bias.dtype))
        conv.weight.copy_((w * scale.view(1, 3, 1, 1))[:, order])
    return out


def named_weights(model: VGG) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) by Caffe name, conv1_1 ... fc8, in our layouts."""
    if model.batch_norm:
        raise ValueError(f"{model.arch}: batch-norm nets have no Caffe or Keras VGG layout (write a .pth)")
    sd, index = model.state_dict(), feature_index(model.letter)
    named = {n: (sd[f"features.{i}.weight"], sd[f"features.{i}.bias"]) for n, i in index.items()}
    for name, i in zip(FC_NAMES, (0, 3, 6), strict=True):
        named[name] = (sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"])
    return named


def torchvision_bytes(model: VGG) -> bytes:
    """``torch.save`` of the state_dict (torchvision's keys), as ``torchvision.models.vgg16()``
    loads it."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(t: torch.Tensor) -> bytes:
    """BlobProto: shape (7: BlobShape, packed int64 dims in 1) and data (5: packed floats)."""
    shape = _field(1, b"".join(_varint(d) for d in t.shape))
    data = t.detach().cpu().float().contiguous().numpy().astype("<f4").tobytes()
    return _field(7, shape) + _field(5, data)


def caffemodel_bytes(model: VGG, name: str = "VGG") -> bytes:
    """A NetParameter (name 1, layer 100) in BVLC caffe.proto's current layer format: one
    Convolution / InnerProduct layer per weight layer, named as the authors named theirs, and
    an LRN layer (no blobs) after conv1_1 for A-LRN."""
    layers = []
    for layer, (w, b) in named_weights(model).items():
        kind = b"InnerProduct" if layer.startswith("fc") else b"Convolution"
        layers.append(_field(1, layer.encode()) + _field(2, kind) + _field(7, _blob(w)) + _field(7, _blob(b)))
        if layer == "conv1_1" and model.letter == "A-LRN":
            layers.append(_field(1, b"norm1") + _field(2, b"LRN"))
    return _field(1, name.encode()) + b"".join(_field(100, x) for x in layers)


def write_keras_h5(path: Path, model: VGG) -> None:
    """Keras' weights-only HDF5 (``save_weights`` of ``keras.applications.VGG16/19``): layer
    groups listed in ``layer_names``, each with its ``weight_names``; conv kernels (kh, kw, in,
    out), Dense kernels (in, out), FC6's inputs in Keras' (H, W, C) flattening."""
    import h5py

    if model.letter == "A-LRN":
        raise ValueError("A-LRN has no Keras layout (Keras' VGG has no LRN layer)")
    named = named_weights(model)
    c5 = named[[n for n in named if n.startswith("conv")][-1]][0].shape[0]
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        names = []
        for layer, (w, b) in named.items():
            key = _keras_name(layer)
            if layer == "fc6":  # (C, H, W) columns -> (H, W, C)
                k = model.kernel
                w = w.reshape(w.shape[0], c5, k, k).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            kernel = w.permute(2, 3, 1, 0) if w.dim() == 4 else w.T  # OIHW -> HWIO, (out, in) -> (in, out)
            g = f.create_group(key)
            weights = [f"{key}/kernel:0", f"{key}/bias:0"]
            g.attrs["weight_names"] = np.array([n.encode() for n in weights])
            for n, t in zip(weights, (kernel, b), strict=True):
                g.create_dataset(n, data=t.detach().cpu().float().contiguous().numpy())
            names.append(key.encode())
        f.attrs["layer_names"] = np.array(names)
        f.attrs["backend"], f.attrs["keras_version"] = b"torch", b"3"


def _keras_name(caffe: str) -> str:
    """conv3_2 -> block3_conv2; fc6/fc7/fc8 -> fc1/fc2/predictions."""
    if caffe.startswith("conv"):
        block, i = caffe[4:].split("_")
        return f"block{block}_conv{i}"
    return {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}[caffe]


def write_weights(ckpt: str | Path, out: str | Path) -> Preprocess:
    """``verydeep export CKPT OUT.pth|.h5|.caffemodel``: the checkpoint's net in the format's
    convention (``FORMATS``), written atomically; returns that convention."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"{out}: write .pth or .pt (torchvision), .h5 (Keras), .caffemodel or .onnx")
    target = output_target(out)
    model, meta = load_model(ckpt)
    dst = Preprocess.preset(FORMATS[out.suffix])
    model = fold_convention(model, meta.prep, dst)
    if out.suffix == ".h5":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_keras_h5(target, model)
    else:
        data = caffemodel_bytes(model) if out.suffix == ".caffemodel" else torchvision_bytes(model)
        atomic_write(target, data)
    return dst
