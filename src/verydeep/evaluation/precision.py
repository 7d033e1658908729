"""The nets inference runs for each mode of ``numerics.PRECISIONS`` (``verydeep.numerics``
resolves the request; this module builds the net and its calibration), one choice shared by
eval, predict and features (and measured by ``verydeep bench``).

- ``fp32``, ``tf32``: the net itself (``Numerics.context`` sets the GPU's fp32 math).
- ``winograd``: a copy whose 3x3 convolutions of 64+ inputs and 128+ outputs are Winograd
  F(4x4, 3x3) (``models/winograd.py``; the fused C++ transforms where they build, as
  ``verydeep train`` uses them on CPUs without bf16): 4x fewer multiplications in those layers,
  the same sums up to fp32 rounding (about 1e-5 relative). The fastest mode on CPUs whose int8
  units are no faster than fp32.
- ``bf16``: a copy with bf16 weights, run under bf16 autocast.
- ``int8``: the net quantised after training (``models/int8.py``), calibrated on
  ``CALIBRATION_IMAGES`` photographs: by default the ones being processed, evenly spread (their
  pixels only, never their labels); a folder of others can be named instead. CPU only.
- ``int8-checked``: int8, and each posterior whose top-2 margin is under ``CHECK_MARGIN`` (a
  near-tie, where int8's rounding can flip the top-1 class) is recomputed by the fp32 net. It
  costs int8's time plus fp32's for those photos, and agrees with fp32 more (docs/BENCHMARKS.md).
  For class posteriors only: features have no decision to check.

``auto`` never picks int8: quantisation changes the numbers slightly (docs/BENCHMARKS.md gives
the agreement), so it is asked for.

Example:
    >>> from verydeep.evaluation.precision import for_precision
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> bf16_net, autocast = for_precision(net, Preprocess(), "bf16")
    >>> next(bf16_net.parameters()).dtype, autocast
    (torch.bfloat16, True)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from ..config import pixels
from ..data.images import BadImageError, find_images, load_image
from ..data.loaders import spread_indices
from ..data.preprocess import Preprocess
from ..models.vgg import VGG
from ..numerics import INT8
from .core import match_channels, rescale

CALIBRATION_IMAGES = 32
CHECK_MARGIN = 0.01  # int8-checked: top-2 posterior margins under this are recomputed in fp32


def check_calibrate(precision: str, calibrate: str | None, modes: tuple[str, ...] = INT8) -> None:
    """A calibration folder is read by the int8 ``modes`` only: with any other it is refused."""
    if calibrate and precision not in modes:
        raise ValueError(f"--calibrate is for --precision {' or '.join(modes)} only, not {precision}")


def calibration_crops(images: Iterable[Image.Image | torch.Tensor], crop: int, channels: int) -> torch.Tensor:
    """Centre crops (N, C, crop, crop) uint8 of PIL or uint8 CHW images, each rescaled first."""
    side = pixels(256, crop)  # crops cut from images rescaled to S = 256 paper units
    out = [TF.center_crop(match_channels(rescale(x, side)[None], channels), [crop, crop])[0] for x in images]
    if not out:
        raise ValueError("int8 needs calibration images; none could be read")
    return torch.stack(out)


def spread(items: Sequence, n: int = CALIBRATION_IMAGES) -> list:
    """``n`` items evenly spread over ``items`` (all of them if fewer): every class has its share."""
    return [items[i] for i in spread_indices(len(items), n)]


def image_paths(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, sorted (the ``--calibrate`` folder)."""
    return find_images(folder, what="calibration folder")


def read_images(paths: Iterable[str | Path], exif: bool = True) -> Iterable[Image.Image]:
    """The images of ``paths`` that can be read (the rest are left out)."""
    for p in paths:
        try:
            yield load_image(p, exif=exif)
        except (BadImageError, OSError):
            continue


def for_precision(
    model: VGG, prep: Preprocess, precision: str, calibration: Iterable[Image.Image | torch.Tensor] = ()
) -> tuple[nn.Module, bool]:
    """(net to run, bf16 autocast?) for a resolved ``precision``. ``bf16`` runs a copy of
    ``model`` with bf16 weights, ``int8`` quantises a copy on ``calibration`` (PIL or uint8 CHW
    images), and ``int8-checked`` keeps ``model`` beside that copy to recompute near-ties;
    ``winograd`` runs a copy whose eligible 3x3 convs are Winograd's (same weights); ``fp32``
    returns ``model`` itself, and so does ``bf16`` for a model whose weights are bf16 already
    (a caller that runs many passes converts once)."""
    if precision == "bf16":
        if next(model.parameters()).dtype == torch.bfloat16:  # already such a copy: reuse it
            return model, True
        # a copy with bf16 weights: autocast then has nothing to cast per call (it re-cast FC6's
        # 102 M weights on every forward, a third of a dense evaluation's time)
        return copy.deepcopy(model).to(torch.bfloat16), True
    if precision == "winograd":
        from ..models.winograd import winograd_convs

        return winograd_convs(model), False
    if precision not in INT8:
        return model, False
    from ..models.int8 import quantize_int8

    crops = calibration_crops(calibration, model.crop_size, model.in_channels)
    net = quantize_int8(model, prep(crops))
    if precision == "int8-checked":
        net.exact, net.check_margin = model, CHECK_MARGIN  # model itself, as fp32 runs it
    return net, False
