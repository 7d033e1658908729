"""Read the authors' Caffe release (``.caffemodel``) without Caffe or protobuf installed.

A caffemodel is a binary ``NetParameter``. Its layers come either in the current ``layer``
field (100, ``LayerParameter``: name=1, type=2 as a string, blobs=7) or in the legacy ``layers``
field (2, ``V1LayerParameter``: name=4, type=5 as an enum, blobs=6) that the 2014 VGG release
uses. Each ``BlobProto`` has its shape in ``shape`` (7, ``BlobShape.dim`` = 1, packed int64) or
in the legacy num/channels/height/width (1-4), and its values in ``data`` (5, packed float) or
``double_data`` (8). Field numbers are those of BVLC's ``caffe.proto``.

Weights keep Caffe's layout: conv kernels are (out, in, kh, kw) exactly like ours, and FC6's
input is pool5 flattened as (C, H, W), also like ours; only the colour order differs (Caffe nets
take BGR input), which ``verydeep.io.weights.convert`` handles.

Example:
    >>> from verydeep.io.weights.caffe import parse_net
    >>> blob = bytes([0x2A, 0x08]) + bytes(4) + bytes([0, 0, 0x80, 0x3F])  # data = [0.0, 1.0]
    >>> layer = b"\\x0a\\x03fc8\\x12\\x0cInnerProduct\\x3a" + bytes([len(blob)]) + blob
    >>> net = parse_net(b"\\xa2\\x06" + bytes([len(layer)]) + layer)  # field 100 = layer
    >>> net[0].name, net[0].type, net[0].blobs[0].tolist()
    ('fc8', 'InnerProduct', [0.0, 1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .protowire import LEN, Field, as_int, as_message, as_string, fields, packed_floats, packed_ints

# NetParameter field -> (name, type, blobs) field numbers of its layer message
LAYER_FIELDS = {100: (1, 2, 7), 2: (4, 5, 6)}
V0_FIELDS = (1, 2, 50)  # the oldest files nest a V0LayerParameter in V1LayerParameter field 1
# V1LayerParameter.LayerType values that matter to VGG, as the new string types
V1_TYPES = {
    4: "Convolution",
    14: "InnerProduct",
    15: "LRN",
    17: "Pooling",
    18: "ReLU",
    6: "Dropout",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    5: "Data",
    1: "Accuracy",
}
# V0LayerParameter's lower-case type strings
V0_TYPES = {"conv": "Convolution", "innerproduct": "InnerProduct", "lrn": "LRN", "pool": "Pooling"}
MAX_DIMS = 32  # Caffe's kMaxBlobAxes


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


def parse_blob(buf: memoryview) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its declared shape."""
    shape: list[int] | None = None
    legacy = [0, 0, 0, 0]
    has_legacy = False
    chunks: list[np.ndarray] = []
    for f in fields(buf):
        if f.number == 7:
            shape = [d for g in fields(as_message(f)) if g.number == 1 for d in packed_ints(g)]
        elif 1 <= f.number <= 4:
            legacy[f.number - 1], has_legacy = as_int(f), True
        elif f.number == 5:
            chunks.append(packed_floats(f, "<f4"))
        elif f.number == 8:
            chunks.append(packed_floats(f, "<f8"))
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, "<f4")
    if shape is None:
        shape = legacy if has_legacy else [data.size]
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise ValueError(f"malformed caffemodel: bad blob shape {shape[:8]}")
    if math.prod(shape) != data.size:  # the declared shape is only compared, never allocated
        raise ValueError(f"malformed caffemodel: blob shape {shape} does not match {data.size} values")
    return data.astype(np.float32, copy=False).reshape(shape)


def parse_layer(buf: memoryview, spec: tuple[int, int, int], legacy: bool) -> CaffeLayer:
    name_no, type_no, blobs_no = spec
    layer = CaffeLayer("", "")
    for f in fields(buf):
        if f.number == name_no:
            layer.name = as_string(f)
        elif f.number == type_no:
            layer.type = _layer_type(f, legacy)
        elif f.number == blobs_no:
            layer.blobs.append(parse_blob(as_message(f)))
        elif legacy and f.number == 1 and f.wire == LEN:
            old = parse_layer(as_message(f), V0_FIELDS, legacy=False)
            old_type = V0_TYPES.get(old.type, old.type)
            layer.name, layer.type = layer.name or old.name, layer.type or old_type
            layer.blobs += old.blobs
    return layer


def _layer_type(f: Field, legacy: bool) -> str:
    if legacy and f.wire != LEN:
        return V1_TYPES.get(as_int(f), f"V1Type{as_int(f)}")
    return as_string(f)


def parse_net(data: bytes | memoryview) -> list[CaffeLayer]:
    """The layers of a binary ``NetParameter``, in file order."""
    layers, kinds = [], set()
    for f in fields(memoryview(data)):
        if f.number in LAYER_FIELDS:
            layers.append(parse_layer(as_message(f), LAYER_FIELDS[f.number], legacy=f.number == 2))
            kinds.add(f.number)
    if not layers:
        raise ValueError("not a caffemodel: no layers found")
    if len(kinds) > 1:
        raise ValueError("malformed caffemodel: mixes the `layer` and legacy `layers` fields")
    return layers


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """Parse a ``.caffemodel`` file; errors name the file."""
    path = Path(path)
    try:
        return parse_net(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def caffe_weights(layers: list[CaffeLayer]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Weight layers by Caffe name (conv1_1 ... fc8) as (weight, bias) in our layouts."""
    named: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        conv = layer.name.startswith("conv")
        if not (conv or layer.name in ("fc6", "fc7", "fc8")):
            raise ValueError(f"unexpected layer with weights {layer.name!r} (expected conv1_1..fc8)")
        want = "Convolution" if conv else "InnerProduct"
        if layer.type != want:
            raise ValueError(f"layer {layer.name} is {layer.type!r}, expected {want}")
        if len(layer.blobs) != 2 or layer.name in named:
            raise ValueError(f"layer {layer.name}: expected one weight and one bias blob")
        w, b = (torch.from_numpy(np.array(x, dtype=np.float32)) for x in layer.blobs)
        out = b.numel()
        # legacy blobs are 4-D (1, 1, out, in) for FC layers and (1, 1, 1, out) for biases
        if out == 0 or w.numel() == 0 or w.numel() % out or (conv and w.dim() != 4):
            raise ValueError(f"layer {layer.name}: weight shape {tuple(w.shape)} does not fit {out} outputs")
        named[layer.name] = (w if conv else w.reshape(out, -1), b.reshape(out))
    return named


def has_lrn(layers: list[CaffeLayer]) -> bool:
    return any(layer.type == "LRN" for layer in layers)
