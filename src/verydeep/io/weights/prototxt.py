"""Read a Caffe deploy ``.prototxt`` (protobuf text format) and check it against the weights.

Only what an architecture check needs: ``parse`` turns the text into nested dicts of lists
(every field may repeat), and ``check_against`` compares layer names, order, output counts,
kernel sizes and the input size with the weights read from the ``.caffemodel``. Any
disagreement is one ``ValueError`` that names the layer.

Example:
    >>> from verydeep.io.weights.prototxt import parse
    >>> net = parse('name: "VGG" input_dim: 1 layers { name: "fc8" type: INNER_PRODUCT '
    ...             'inner_product_param { num_output: 1000 } }')
    >>> net["layers"][0]["inner_product_param"][0]["num_output"]
    ['1000']
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...models.vgg import final_map_size

MAX_BYTES = 16 << 20  # deploy files are a few KB; anything this big is not one
MAX_DEPTH = 32
_TOKEN = re.compile(
    r'\s+|#[^\n]*|([{}:;,\[\]])|("(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')|([^\s{}:;,"\'#\[\]]+)'
)


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"prototxt: cannot read {text[pos : pos + 20]!r}")
        tok = m.group(1) or m.group(2) or m.group(3)
        if tok and tok not in ";,":
            out.append(tok)
        pos = m.end()
    return out


def parse(text: str) -> dict[str, list]:
    """Text-format message -> {field: [value or sub-message dict, ...]}; strings unquoted."""
    toks, pos = tokens(text), 0

    def message(depth: int, closing: str | None) -> dict[str, list]:
        nonlocal pos
        if depth > MAX_DEPTH:
            raise ValueError("prototxt: nested too deeply")
        msg: dict[str, list] = {}
        while pos < len(toks) and toks[pos] != closing:
            name = toks[pos]
            if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
                raise ValueError(f"prototxt: expected a field name, got {name!r}")
            pos += 1
            if pos < len(toks) and toks[pos] == ":":
                pos += 1
            if pos < len(toks) and toks[pos] == "{":
                pos += 1
                msg.setdefault(name, []).append(message(depth + 1, "}"))
            elif pos < len(toks) and toks[pos] not in "{}[]":
                tok = toks[pos]
                msg.setdefault(name, []).append(tok[1:-1] if tok[0] in "\"'" else tok)
            else:
                raise ValueError(f"prototxt: field {name} has no value")
            pos += 1
        if closing is not None and pos >= len(toks):
            raise ValueError("prototxt: unbalanced braces")
        return msg

    return message(0, None)


def read_prototxt(path: str | Path) -> dict[str, list]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prototxt not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path} is too large to be a deploy prototxt")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None


def _kind(layer: dict) -> str:
    """'convolution', 'innerproduct', 'lrn', ... for both string and V1 enum types."""
    return str(layer.get("type", [""])[0]).lower().replace("_", "")


def _int(msg: dict, key: str, default: int) -> int:
    try:
        return int(msg.get(key, [default])[0])
    except ValueError:
        raise ValueError(f"prototxt: {key} is not an integer") from None


def input_size(net: dict) -> int | None:
    """The input height declared by ``input_dim``, ``input_shape`` or an Input layer."""
    dims = net.get("input_dim") or [d for s in net.get("input_shape", [])[:1] for d in s.get("dim", [])]
    for layer in net.get("layer", []):
        if _kind(layer) == "input" and not dims:
            shape = layer.get("input_param", [{}])[0].get("shape", [{}])[0]
            dims = shape.get("dim", [])
    return int(dims[2]) if len(dims) >= 4 else None


def check_against(net: dict, named: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Raise ValueError where ``net`` disagrees with the weights; returns whether it has LRN."""
    layers = net.get("layer") or net.get("layers") or []
    weighted = [x for x in layers if _kind(x) in ("convolution", "innerproduct")]
    names = [str(x.get("name", ["?"])[0]) for x in weighted]
    if names != list(named):
        raise ValueError(f"prototxt layers {names} disagree with the weights' layers {list(named)}")
    for layer, name in zip(weighted, names, strict=True):
        w = named[name][0]
        conv = _kind(layer) == "convolution"
        p = layer.get("convolution_param" if conv else "inner_product_param", [{}])[0]
        if _int(p, "num_output", -1) != w.shape[0]:
            n = p.get("num_output", ["none"])[0]
            raise ValueError(f"prototxt layer {name}: num_output {n}, weights have {w.shape[0]} outputs")
        if conv:
            k, pad = _int(p, "kernel_size", 1), _int(p, "pad", 0)
            if k != w.shape[-1] or pad != k // 2:
                raise ValueError(f"prototxt layer {name}: kernel {k} pad {pad}, weights have {w.shape[-1]}")
    size = input_size(net)
    if size is not None and "conv1_1" in named and "fc6" in named:
        c5 = named[[n for n in named if n.startswith("conv")][-1]][0].shape[0]
        k = final_map_size(size)
        if k * k * c5 != named["fc6"][0].shape[1]:
            raise ValueError(f"prototxt input {size}x{size} gives FC6 {c5}x{k}x{k} inputs, weights differ")
    return any(_kind(x) == "lrn" for x in layers)
