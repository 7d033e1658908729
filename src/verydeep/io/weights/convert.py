"""Weights in: Caffe, torchvision, Keras and safetensors files -> one verydeep checkpoint.

``load_weights`` reads any supported file into a ``VGG`` plus the ``Meta`` that says how to
feed it (preprocessing, class names, source); ``convert`` also writes that as a verydeep
safetensors checkpoint, which eval, predict and features then use as is. The file type comes
from its first bytes (HDF5, zip/pickle, safetensors, else protobuf), not only its extension.

Preprocessing defaults follow the source: Caffe and Keras weights expect Caffe's BGR, 0-255,
mean-pixel input (``caffe`` preset); torchvision's expect RGB 0-1 with ImageNet mean/std
(``torchvision``). ``rgb=True`` reorders a BGR source's first conv to RGB instead, and the
default preset becomes ``paper`` with Caffe's mean pixel in RGB order.

Example:
    >>> import os, tempfile, torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.weights.convert import convert
    >>> d = tempfile.mkdtemp()
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> torch.save(net.state_dict(), os.path.join(d, "net.pth"))
    >>> meta = convert(os.path.join(d, "net.pth"), os.path.join(d, "net.safetensors"))
    >>> meta.source, meta.prep.bgr, meta.classes
    ('torchvision', False, ['class_0', 'class_1', 'class_2'])
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ...data.images import file_problem
from ...data.preprocess import Preprocess
from ...models.vgg import VGG
from ..checkpoint import Meta, checkpoint_target, load_model, read_header, save_model
from ..formats import detect_source
from .caffe import caffe_weights, has_lrn, read_caffemodel
from .layout import build_model, state_dict_from_named

SOURCES = ("caffe", "torchvision", "keras", "safetensors")
DEFAULT_PRESET = {
    "caffe": "caffe",
    "keras": "caffe",
    "torchvision": "torchvision",
    "safetensors": "torchvision",
}
MAX_CLASSES_BYTES = 16 << 20


def _check_zip(path: Path, data: bytes) -> None:
    """torch.save's zip records: none may declare more bytes than the file has, and each must
    match the CRC-32 the archive stores for it (torch's own reader does not compare them, so a
    flipped byte in a weight would load). ``data``: the file's bytes, read once."""
    if not data.startswith(b"PK\x03\x04"):
        return  # the legacy pickle format carries no checksum (docs/RELIABILITY.md)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            big = [i.filename for i in z.infolist() if i.file_size > len(data)]
            if big:
                raise ValueError(f"{path}: record {big[0]} declares more bytes than the file holds")
            damaged = z.testzip()
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a loadable state_dict ({e})") from None
    if damaged:
        raise ValueError(f"{path} is damaged: record {damaged} fails its CRC-32 check; use another copy")


def read_torchvision(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision-keyed state_dict from ``torch.save``; never unpickles code."""
    data = Path(path).read_bytes()
    _check_zip(Path(path), data)
    with warnings.catch_warnings(record=True) as caught:  # a refused file: its one line, no warning
        warnings.simplefilter("always")
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a loadable state_dict ({_load_reason(e)})") from None
    del data
    for w in caught:  # a file that loaded: what torch said of it is still shown
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "model"):
        obj = next(iter(obj.values()))  # a training script's wrapper around the state_dict
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel's prefix


def _load_reason(e: Exception) -> str:
    """torch.load's refusal in a few words. Its safe unpickler's message begins with advice to
    retry with ``weights_only=False`` (which would run the file's code) and ends with the reason."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        found = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
        if found:  # e.g. torch.save(model) instead of torch.save(model.state_dict())
            return f"it pickles a {found.group(1)}, not only tensors: save its state_dict() instead"
        return f"refused by the safe unpickler: {detail}; not a torch.save file of tensors"
    return text.splitlines()[0] if text else type(e).__name__


def _read_safetensors(path: Path, arch: str | None) -> tuple[VGG, Meta | None]:
    """Our checkpoints keep their Meta; a bare torchvision-keyed safetensors file gets none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_header(path)
    if "verydeep" in (header.get("__metadata__") or {}):
        if arch is not None:  # the checkpoint's own config decides
            raise ValueError(
                f"--arch has no effect: {path} is a verydeep checkpoint, its config is in its metadata"
            )
        return load_model(path)
    try:
        return build_model(load_file(path), arch), None
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None


def _read(path: Path, source: str, arch: str | None, prototxt: str | Path | None) -> VGG:
    if source == "torchvision":
        return build_model(read_torchvision(path), arch)
    if source == "keras":
        from .keras import keras_weights, read_keras_h5

        sd, letter = state_dict_from_named(keras_weights(read_keras_h5(path)), arch)
        return build_model(sd, arch or letter)
    layers = read_caffemodel(path)
    named, lrn = caffe_weights(layers), has_lrn(layers)
    if prototxt is not None:
        from .prototxt import check_against, read_prototxt

        lrn = check_against(read_prototxt(prototxt), named) or lrn
    sd, letter = state_dict_from_named(named, arch, lrn=lrn)
    return build_model(sd, arch or letter)


def to_rgb(model: VGG, prep: Preprocess) -> Preprocess:
    """Reorder the first conv's input channels BGR -> RGB; returns the matching preprocessing."""
    conv = model.features[0]
    if conv.in_channels != 3 or not prep.bgr:
        raise ValueError("--rgb needs a 3-channel net whose preprocessing is BGR (Caffe or Keras weights)")
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
    return Preprocess(tuple(reversed(prep.mean)), tuple(reversed(prep.std)), prep.pixel_range, bgr=False)


def choose_preprocess(native: Preprocess, preset: str | None) -> Preprocess:
    """``preset`` if given and in the weights' channel order, else what the weights expect."""
    if preset is None:
        return native
    prep = Preprocess.preset(preset)
    if preset == "paper" and native.pixel_range == 255.0 and not native.bgr:
        # the paper subtracts the training set's mean pixel: for imported weights, theirs
        return Preprocess.preset("paper", mean=native.mean)
    if prep.bgr != native.bgr:
        order = "BGR" if native.bgr else "RGB"
        raise ValueError(f"preset {preset!r} is {'BGR' if prep.bgr else 'RGB'}; these weights expect {order}")
    return prep


def load_weights(
    path: str | Path,
    *,
    preprocess: str | None = None,
    rgb: bool = False,
    classes: str | Path | None = None,
    arch: str | None = None,
    prototxt: str | Path | None = None,
) -> tuple[VGG, Meta]:
    """Read any supported weights file; returns the net (eval mode) and its ``Meta``.

    ``preprocess`` names a preset (paper, caffe, torchvision) to store instead of the source's
    default; ``rgb`` converts a BGR net's first conv to RGB; ``classes`` is a file with one
    name per line; ``arch`` settles ambiguous files (e.g. A vs A-LRN); ``prototxt`` is a
    Caffe deploy file checked against the weights.
    """
    path = Path(path)
    source = detect_source(path)
    if prototxt is not None and source != "caffe":
        raise ValueError("--prototxt only applies to .caffemodel weights")
    old: Meta | None = None
    if source == "safetensors":
        model, old = _read_safetensors(path, arch)
    else:
        model = _read(path, source, arch, prototxt)
    native = old.prep if old else Preprocess.preset(DEFAULT_PRESET[source])
    if rgb:
        native = to_rgb(model, native)
    prep = choose_preprocess(native, preprocess)
    n = model.num_classes
    names = read_classes(classes, n) if classes else old.classes if old else default_classes(n)
    meta = Meta(preprocess=prep.to_dict(), classes=names, source=old.source if old else source)
    if old:
        meta.train_scale, meta.pca, meta.config = old.train_scale, old.pca, old.config
    meta.model = dict(model.build_kwargs)
    return model.eval(), meta


def convert(src: str | Path, dst: str | Path, **options: object) -> Meta:
    """``load_weights(src, **options)`` written to ``dst`` as a verydeep safetensors checkpoint."""
    checkpoint_target(dst)  # before the weights are read
    model, meta = load_weights(src, **options)  # type: ignore[arg-type]
    save_model(dst, model, meta)
    return meta


def default_classes(n: int) -> list[str]:
    """Names for imported weights without a classes file: the 1000 ILSVRC-2012 classes in the
    standard (sorted WordNet id) order that Caffe, torchvision and Keras weights share, as
    torchvision ships them; ``class_<i>`` for any other count."""
    if n == 1000:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)
    return [f"class_{i}" for i in range(n)]


def read_classes(path: str | Path, n: int) -> list[str]:
    """One class name per line (blank lines ignored), ``n`` of them, each once, UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"classes file {path}: {file_problem(path)}")
    if path.stat().st_size > MAX_CLASSES_BYTES:
        raise ValueError(f"classes file {path} is too large (over {MAX_CLASSES_BYTES} bytes) for class names")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"classes file {path} is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != n:
        raise ValueError(f"{path} has {len(names)} class names, the weights have {n} classes")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:  # a name given twice makes predictions and eval's class matching ambiguous
        raise ValueError(f"{path} names {twice[0]!r} more than once; class names must be unique")
    return names
