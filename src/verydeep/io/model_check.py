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
import math
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig, ModelConfig
from ..data.preprocess import ColourPCA, Preprocess
from ..models.vgg import VGG, parse_arch
from ..ranges import check_value

# The VGG builder's arguments and their accepted types; the ranges are ModelConfig's, the same a
# run's config obeys (a checkpoint has at least one class and one input channel).
_BUILD: dict[str, tuple[type, ...]] = {
    "num_classes": (int,),
    "in_channels": (int,),
    "width_mult": (int, float),
    "fc_width": (int,),
    "crop_size": (int,),
    "dropout": (int, float),
}


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} has damaged verydeep metadata: {what}")


def _in_range(cls: type, name: str, value: Any, label: str, path: Path) -> None:
    try:
        check_value(cls, name, value, label)
    except ValueError as e:
        raise _bad(path, str(e)) from None


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
        if isinstance(value, bool) or not isinstance(value, _BUILD[key]) or value != value:
            raise _bad(path, f"model.{key} must be a number, got {value!r}")
        if key in ("num_classes", "in_channels") and value < 1:  # 0 means "from the data" in a config
            raise _bad(path, f"model.{key} must be at least 1, got {value!r}")
        _in_range(ModelConfig, key, value, f"model.{key}", path)
    return dict(model)


def check_meta(meta: Any, path: Path) -> None:
    """Everything besides the builder kwargs: preprocessing, classes, scales, colour PCA."""
    model = check_build_kwargs(meta.model, path)
    _check_preprocess(meta, model.get("in_channels", 3), path)
    classes = meta.classes
    if not all(isinstance(c, str) and c.strip() for c in classes):
        raise _bad(path, "classes must be non-empty strings")
    if len(set(classes)) != len(classes):
        twice = next(c for c in classes if classes.count(c) > 1)
        raise _bad(path, f"class {twice!r} is named twice")
    n, k = model.get("num_classes", 1000), len(classes)
    # a box net (Appendix A) keeps its classifier's names: 4 outputs (SCR) or 4 per class (PCR)
    outputs = (4, 4 * k) if isinstance(meta.config, dict) and "localization" in meta.config else (k,)
    if classes and n not in outputs:
        raise _bad(path, f"{k} class names for {n} classes")
    scale = meta.train_scale
    if not (isinstance(scale, list) and len(scale) in (1, 2) and _numbers(scale) and scale == sorted(scale)):
        raise _bad(path, f"train_scale must be [S] or [Smin, Smax] with Smin <= Smax, got {scale!r}")
    _in_range(DataConfig, "scale", scale, "train_scale", path)
    if not isinstance(meta.source, str):
        raise _bad(path, f"source must be a string, got {meta.source!r}")


def _numbers(xs: list) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)


def _check_preprocess(meta: Any, channels: int, path: Path) -> None:
    """Preprocessing and colour PCA: one finite mean and one finite positive std per channel, a
    positive pixel range, finite PCA eigenvalues and vectors."""
    try:
        prep = Preprocess.from_dict(meta.preprocess)
        pca = ColourPCA.from_dict(meta.pca) if meta.pca is not None else None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _bad(path, f"preprocess or pca ({type(e).__name__}: {e})") from None
    values = [*prep.mean, *prep.std, prep.pixel_range]
    if not _numbers(values) or not all(math.isfinite(v) for v in values):
        raise _bad(path, "preprocess holds a value that is not a finite number")
    if not len(prep.mean) == len(prep.std) == channels or any(s <= 0 for s in prep.std):
        raise _bad(path, f"preprocess needs a mean and a positive std for each of {channels} channels")
    if prep.pixel_range <= 0:
        raise _bad(path, f"preprocess.pixel_range must be positive, got {prep.pixel_range!r}")
    if pca is not None:
        nums = [*pca.eigval, *(v for row in pca.eigvec for v in row)]
        if not _numbers(nums) or not all(math.isfinite(v) for v in nums):
            raise _bad(path, "pca holds a value that is not a finite number")


def expected_tensors(model: dict) -> dict[str, torch.Tensor]:
    """Name -> tensor of ``VGG(**model)`` on the meta device (shapes and dtypes; no memory, no
    init cost: a lying width costs nothing)."""
    with torch.device("meta"):
        return VGG(**model).state_dict()


def expected_shapes(model: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``VGG(**model)``."""
    return {k: tuple(v.shape) for k, v in expected_tensors(model).items()}


def check_tensors(tensors: dict[str, torch.Tensor], model: dict, path: Path) -> None:
    """The tensors are exactly those of ``VGG(**model)`` (names and shapes), floating point where
    the net's are (fp16/bf16 are converted on loading; batch norm's counter is an integer), and
    all finite."""
    expected = expected_tensors(model)
    want = {k: tuple(v.shape) for k, v in expected.items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()), key=str)[:3]
        raise ValueError(
            f"{path}: its tensors do not fit the net its metadata describes "
            f"({model['arch']}; differing (name, shape): {diff})"
        )
    for name, t in tensors.items():
        if t.is_floating_point() != expected[name].is_floating_point():
            kind = "floating point" if expected[name].is_floating_point() else "integer"
            raise ValueError(f"{path} is damaged: {name} holds {t.dtype} values; the net's are {kind}")
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
