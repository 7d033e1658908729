"""Read ``keras.applications.VGG16`` / ``VGG19`` weights from HDF5 (Keras 2 and Keras 3).

Three layouts are understood: Keras 3 ``.weights.h5`` (``layers/<key>/vars/0|1``, the layer
name in the ``vars`` group's ``name`` attribute; also inside a ``.keras`` zip), and the legacy
whole-model or weights-only ``.h5`` of Keras 2/3 (``[model_weights/]<layer>`` groups listed
in ``layer_names``, each with a ``weight_names`` attribute). Keras is not needed, only ``h5py``.

Keras stores conv kernels as (kh, kw, in, out) and Dense kernels as (in, out); ours are
(out, in, kh, kw) and (out, in). Keras' ``Flatten`` runs on channels-last maps, so FC6's inputs
are ordered (H, W, C) where ours are (C, H, W): its columns are permuted, not just transposed.
Keras' VGG preprocessing (``preprocess_input``) is Caffe's: BGR, 0-255, mean pixel subtracted.

Example:
    >>> from verydeep.io.weights.keras import caffe_name
    >>> caffe_name("block3_conv2"), caffe_name("fc1"), caffe_name("predictions")
    ('conv3_2', 'fc6', 'fc8')
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

_FC = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}
MAX_COMPRESSED = 4 << 30  # a compressed dataset may exceed the file; VGG-19's largest is 400 MB


def caffe_name(keras_name: str) -> str | None:
    """``block<b>_conv<i>`` -> ``conv<b>_<i>``; fc1/fc2/predictions -> fc6/fc7/fc8."""
    m = re.fullmatch(r"block(\d)_conv(\d)", keras_name)
    return f"conv{m[1]}_{m[2]}" if m else _FC.get(keras_name)


def _text(x: object) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _read(ds: object, file_size: int) -> np.ndarray:
    """Read one dataset after checking that its declared size is plausible for the file."""
    import h5py

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
        raise ValueError(f"{getattr(ds, 'name', ds)} is not a float array")
    nbytes = math.prod(ds.shape) * ds.dtype.itemsize
    limit = MAX_COMPRESSED if ds.compression else file_size
    if nbytes > limit:
        raise ValueError(f"{ds.name} declares {nbytes} bytes, more than the file can hold")
    return np.asarray(ds[()], dtype=np.float32)


def _layers_keras3(f: object, size: int) -> dict[str, list[np.ndarray]]:
    out = {}
    for key, group in f["layers"].items():  # type: ignore[index]
        vars_ = group.get("vars")
        if vars_ is None or not len(vars_):
            continue
        name = _text(vars_.attrs.get("name", key))
        out[name] = [_read(vars_[k], size) for k in sorted(vars_, key=int)]
    return out


def _layers_legacy(f: object, size: int) -> dict[str, list[np.ndarray]]:
    root = f.get("model_weights", f)  # type: ignore[attr-defined]
    out = {}
    for name in (_text(n) for n in root.attrs.get("layer_names", [])):
        group = root[name]
        names = [_text(w) for w in group.attrs.get("weight_names", [])]
        if names:
            # kernel before bias by rank, whatever the names ("kernel:0", Keras 1's "_W_1:0")
            out[name] = sorted((_read(group[w], size) for w in names), key=lambda a: -a.ndim)
    return out


def _open(path: Path, size: int) -> BinaryIO:
    """The HDF5 bytes: the file itself, or ``model.weights.h5`` inside a Keras 3 ``.keras`` zip."""
    if not zipfile.is_zipfile(path):
        return path.open("rb")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model.weights.h5")  # KeyError: not a .keras archive
        if info.file_size > (size if info.compress_type == zipfile.ZIP_STORED else MAX_COMPRESSED):
            raise ValueError(f"model.weights.h5 declares {info.file_size} bytes, more than the file can hold")
        return io.BytesIO(z.read(info))


def read_keras_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> [kernel, bias] as stored (Keras layouts)."""
    try:
        import h5py
    except ImportError:
        raise ValueError("reading Keras .h5 files needs h5py: pip install h5py") from None

    path = Path(path)
    size = path.stat().st_size
    try:
        with _open(path, size) as source, h5py.File(source, "r") as f:
            layers = _layers_keras3(f, size) if "layers" in f else _layers_legacy(f, size)
    except (OSError, KeyError, TypeError, RuntimeError, zipfile.BadZipFile) as e:  # RuntimeError:
        # h5py's for a corrupt group (e.g. "bad symbol table node signature"), found by fuzzing
        raise ValueError(f"{path} is not a readable Keras HDF5 weights file ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not layers:
        raise ValueError(f"{path} holds no Keras layer weights")
    return layers


def keras_weights(layers: dict[str, list[np.ndarray]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Keras VGG layers -> (weight, bias) by Caffe name, in our layouts."""
    named: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, arrays in layers.items():
        ours = caffe_name(name)
        if ours is None:
            raise ValueError(f"unexpected Keras layer with weights {name!r} (not a VGG16/VGG19 layer)")
        if len(arrays) != 2 or arrays[0].ndim not in (2, 4) or arrays[1].ndim != 1:
            raise ValueError(f"Keras layer {name}: expected a kernel and a bias")
        kernel, bias = (torch.from_numpy(a) for a in arrays)
        weight = kernel.permute(3, 2, 0, 1) if kernel.dim() == 4 else kernel.T  # HWIO -> OIHW
        named[ours] = (weight.contiguous(), bias)
    # Keras 3 files list layers by class-based keys (conv2d_10 before conv2d_2): restore order
    named = dict(sorted(named.items(), key=lambda kv: _order(kv[0])))
    if "fc6" in named:
        named["fc6"] = (_fc6_chw(named), named["fc6"][1])
    return named


def _order(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"conv(\d)_(\d)", name)
    return (int(m[1]), int(m[2])) if m else (99, int(name[2:]))


def _fc6_chw(named: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Reorder FC6's columns from Keras' (H, W, C) flattening to ours (C, H, W)."""
    w = named["fc6"][0]
    convs = [n for n in named if n.startswith("conv")]
    if not convs:
        raise ValueError("Keras file has fc1 but no conv layers")
    c5 = named[convs[-1]][0].shape[0]
    k = math.isqrt(w.shape[1] // c5)
    if k * k * c5 != w.shape[1]:
        raise ValueError(f"Keras fc1 has {w.shape[1]} inputs, not {c5} x k x k")
    return w.reshape(w.shape[0], k, k, c5).permute(0, 3, 1, 2).reshape(w.shape[0], -1).contiguous()
