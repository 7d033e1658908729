"""Checks that a checkpoint's metadata and tensors tell the truth, before anything is built.

A checkpoint is read from disk, so everything in it is untrusted: the builder arguments could name
an unknown key, a string width or a 17 GB net; the preprocessing could lack its mean; a bit flip
could change one weight. ``check_meta`` validates the metadata's values, ``check_tensors`` compares
the tensors with the shapes the metadata promises (computed on the ``meta`` device, so no memory
is spent on a lie), refuses NaN/inf weights, and ``digest`` is the SHA-256 stored at save time and
compared at load time. Every failure is a one-line ``ValueError`` naming the file.

Example:
    >>> import torch
    >>> from verydeep.io.model_check import digest
    >>> digest({"w": torch.zeros(2)}) == digest({"w": torch.zeros(2)})
    True
    >>> digest({"w": torch.zeros(2)}) == digest({"w": torch.tensor([0.0, 1e-45])})
    False
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..data.preprocess import ColourPCA, Preprocess
from ..models.vgg import VGG, parse_arch

# The VGG builder's arguments: accepted types and inclusive range (the same bounds as ModelConfig).
_BUILD: dict[str, tuple[tuple[type, ...], float, float]] = {
    "num_classes": ((int,), 1, 100_000),
    "in_channels": ((int,), 1, 64),
    "width_mult": ((int, float), 1e-6, 8),
    "fc_width": ((int,), 1, 65_536),
    "crop_size": ((int,), 32, 4096),
    "dropout": ((int, float), 0, 0.999999),
}


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} has damaged verydeep metadata: {what}")


def check_build_kwargs(model: Any, path: Path) -> dict:
    """The builder kwargs of a checkpoint, each known, of the right type and in range."""
    if not isinstance(model, dict) or not isinstance(model.get("arch"), str):
        raise _bad(path, "model must be a dict with a string 'arch'")
    unknown = sorted(set(model) - set(_BUILD) - {"arch"})
    if unknown:
        raise _bad(path, f"unknown model key {unknown[0]!r}")
    try:
        parse_arch(model["arch"])
    except ValueError as e:
        raise _bad(path, str(e)) from None
    for key, value in model.items():
        if key == "arch":
            continue
        types, lo, hi = _BUILD[key]
        if isinstance(value, bool) or not isinstance(value, types) or not lo <= value <= hi:
            raise _bad(path, f"model.{key} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return dict(model)


def check_meta(meta: Any, path: Path) -> None:
    """Everything besides the builder kwargs: preprocessing, classes, scales, colour PCA."""
    model = check_build_kwargs(meta.model, path)
    try:
        prep = Preprocess.from_dict(meta.preprocess)
        if meta.pca is not None:
            ColourPCA.from_dict(meta.pca)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _bad(path, f"preprocess or pca ({type(e).__name__}: {e})") from None
    channels = model.get("in_channels", 3)
    if not len(prep.mean) == len(prep.std) == channels or any(s == 0 for s in prep.std):
        raise _bad(path, f"preprocess needs a mean and a non-zero std for each of {channels} channels")
    if not all(isinstance(c, str) for c in meta.classes):
        raise _bad(path, "classes must be strings")
    n, k = model.get("num_classes", 1000), len(meta.classes)
    # a box net (Appendix A) keeps its classifier's names: 4 outputs (SCR) or 4 per class (PCR)
    outputs = (4, 4 * k) if isinstance(meta.config, dict) and "localization" in meta.config else (k,)
    if meta.classes and n not in outputs:
        raise _bad(path, f"{k} class names for {n} classes")
    scale = meta.train_scale
    if not isinstance(scale, list) or not all(isinstance(s, (int, float)) for s in scale):
        raise _bad(path, "train_scale must be a list of numbers")


def expected_shapes(model: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``VGG(**model)``, built on the meta device (no memory,
    no init cost: a lying width costs nothing)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in VGG(**model).state_dict().items()}


def check_tensors(tensors: dict[str, torch.Tensor], model: dict, path: Path) -> None:
    """The tensors are exactly those of ``VGG(**model)`` (names and shapes) and all finite."""
    want = expected_shapes(model)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()), key=str)[:3]
        raise ValueError(
            f"{path}: its tensors do not fit the net its metadata describes "
            f"({model['arch']}; differing (name, shape): {diff})"
        )
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path} is damaged: {name} holds NaN or inf values")


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
