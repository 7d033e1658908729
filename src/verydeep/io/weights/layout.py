"""From foreign weights to a checked ``VGG``: name mapping and architecture inference.

Every importer ends here. Caffe and Keras weights arrive as layers named the Caffe way
(``conv1_1`` ... ``conv5_4``, ``fc6``, ``fc7``, ``fc8``) already in our layouts;
``state_dict_from_named`` places them at torchvision's keys. ``infer_kwargs`` then finds the one
set of ``VGG`` builder arguments whose every parameter shape equals the file's, so a wrong or
truncated file is an error here, not a silent partial load.

Example:
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.weights.layout import infer_kwargs
    >>> net = VGG("C", num_classes=4, width_mult=0.25, fc_width=8, crop_size=64)
    >>> kw = infer_kwargs(net.state_dict())
    >>> kw["arch"], kw["num_classes"], kw["width_mult"], kw["crop_size"]
    ('C', 4, 0.25, 64)
"""

from __future__ import annotations

import math

import torch

from ...models.vgg import CFGS, VGG, conv_names, parse_arch
from ..model_check import expected_shapes

FC_NAMES = ("fc6", "fc7", "fc8")


def feature_index(letter: str, batch_norm: bool = False) -> dict[str, int]:
    """Caffe conv name -> index in ``features`` (torchvision's numbering)."""
    index, i, names = {}, 0, iter(conv_names(letter))
    for item in CFGS[letter]:
        if item in ("M", "LRN"):
            i += 1
        else:
            index[next(names)] = i
            i += 3 if batch_norm else 2  # conv, [bn], relu
    return index


def _letters_for(convs: list[str], named: dict, arch: str | None, lrn: bool) -> list[str]:
    if arch is not None:
        letter, bn = parse_arch(arch)
        if bn:
            raise ValueError(f"{arch}: these weights have no batch-norm layers")
        if conv_names(letter) != convs:
            raise ValueError(f"--arch {arch} has conv layers {conv_names(letter)}, the file has {convs}")
        return [letter]
    # A and A-LRN have the same weights; only the LRN layer in the file tells them apart
    letters = [x for x in CFGS if conv_names(x) == convs and (x == "A-LRN") == (lrn and x.startswith("A"))]
    # C and D have the same names; C's 1x1 kernels tell them apart
    letters = [x for x in letters if _kernels(x) == [named[n][0].shape[-1] for n in convs]]
    if not letters:
        raise ValueError(f"conv layers {convs} match no VGG configuration of Table 1")
    return letters


def _kernels(letter: str) -> list[int]:
    return [int(item.split("-")[0]) for item in CFGS[letter] if item not in ("M", "LRN")]


def state_dict_from_named(
    named: dict[str, tuple[torch.Tensor, torch.Tensor]], arch: str | None = None, lrn: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """Place (weight, bias) pairs named conv1_1..fc8 at torchvision keys; returns (sd, arch)."""
    missing = [n for n in FC_NAMES if n not in named]
    if missing:
        raise ValueError(f"no weights for {', '.join(missing)} (a classifier is needed: fc6, fc7, fc8)")
    convs = [n for n in named if n not in FC_NAMES]
    letter = _letters_for(convs, named, arch, lrn)[0]
    sd = {}
    for name, i in feature_index(letter).items():
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = named[name]
    for name, i in zip(FC_NAMES, (0, 3, 6), strict=True):
        sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"] = named[name]
    return sd, letter


def _shape(sd: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"not VGG weights: no {key!r}")
    return tuple(sd[key].shape)


def infer_kwargs(sd: dict[str, torch.Tensor], arch: str | None = None) -> dict:
    """The ``VGG`` builder kwargs whose parameter shapes equal those of ``sd`` exactly."""
    first, fc6, fc8 = (_shape(sd, f"{k}.weight") for k in ("features.0", "classifier.0", "classifier.6"))
    if len(first) != 4 or len(fc6) != 2 or len(fc8) != 2:
        raise ValueError("not VGG weights: features.0 must be a conv kernel and classifier.* matrices")
    convs = sorted(int(k.split(".")[1]) for k in sd if k.startswith("features.") and sd[k].dim() == 4)
    c5 = sd[f"features.{convs[-1]}.weight"].shape[0]
    kernel = math.isqrt(fc6[1] // c5) if c5 > 0 else 0
    if kernel < 1 or kernel * kernel * c5 != fc6[1]:
        raise ValueError(f"FC6 has {fc6[1]} inputs, not {c5} x k x k for the last conv's {c5} channels")
    base = {
        "num_classes": fc8[0],
        "in_channels": first[1],
        "width_mult": first[0] / 64,
        "fc_width": fc6[0],
        "crop_size": 32 * kernel,  # any size in [32k, 32k + 31] gives FC6 a k x k input
    }
    bn = any(k.endswith("running_mean") for k in sd)
    candidates = [arch] if arch else [x + ("_bn" if bn else "") for x in CFGS if not (bn and x == "A-LRN")]
    got = {k: tuple(v.shape) for k, v in sd.items()}
    for cand in candidates:
        kwargs = {"arch": cand, **base}
        want = expected_shapes(kwargs)
        if want == got:
            return kwargs
    if arch:
        diff = sorted(set(want.items()) ^ set(got.items()))[:4]
        raise ValueError(f"weights do not fit {arch}: differing (key, shape) pairs {diff}")
    raise ValueError(f"weights fit no VGG configuration (first keys {list(got)[:4]})")


def build_model(sd: dict[str, torch.Tensor], arch: str | None = None) -> VGG:
    """A ``VGG`` carrying exactly the weights in ``sd`` (float32), in eval mode."""
    kwargs = infer_kwargs(sd, arch)
    with torch.device("meta"):  # no random init of 138M parameters that are replaced anyway
        model = VGG(**kwargs)
    sd = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()
