"""The arithmetic inference runs in: ``fp32``, ``winograd``, ``bf16``, ``int8`` or ``auto``, one
choice shared by eval, predict and features (and measured by ``verydeep bench``).

- ``fp32``: exact; the default.
- ``winograd``: fp32, with the 3x3 convolutions of 64+ inputs and 128+ outputs computed by
  Winograd F(4x4, 3x3) (``models/winograd.py``; the fused C++ transforms where they build, as
  ``verydeep train`` uses them on CPUs without bf16): 4x fewer multiplications in those layers,
  the same sums up to fp32 rounding (about 1e-5 relative). CPU only (cuDNN picks its own
  algorithms on a GPU). The fastest mode on CPUs whose int8 units are no faster than fp32.
- ``bf16``: autocast to bf16; fast where the hardware has it (AMX, AVX512-BF16, most GPUs),
  about 7x slower than fp32 where it is emulated (AVX2-only CPUs).
- ``int8``: the net quantised after training (``models/int8.py``), calibrated on
  ``CALIBRATION_IMAGES`` photographs: by default the ones being processed, evenly spread (their
  pixels only, never their labels); a folder of others can be named instead. CPU only.
- ``int8-checked``: int8, and each posterior whose top-2 margin is under ``CHECK_MARGIN`` (a
  near-tie, where int8's rounding can flip the top-1 class) is recomputed by the fp32 net. It
  costs int8's time plus fp32's for those photos, and agrees with fp32 more (docs/BENCHMARKS.md).
  For class posteriors only: features have no decision to check.
- ``auto``: bf16 where it is native, else ``winograd`` on a CPU (it differs from fp32 by rounding
  only, as a GPU's choice of convolution algorithm does), else fp32. Never int8: quantisation
  changes the numbers slightly (docs/BENCHMARKS.md gives the agreement), so it is asked for.

Example:
    >>> import torch
    >>> from verydeep.evaluation.precision import inference_precision
    >>> inference_precision("fp32", torch.device("cpu")), inference_precision("int8", torch.device("cpu"))
    ('fp32', 'int8')
    >>> inference_precision("auto", torch.device("cpu")) in ("bf16", "winograd")
    True
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
from ..hardware import native_bf16
from ..models.vgg import VGG
from .core import match_channels, rescale

PRECISIONS = ("fp32", "winograd", "bf16", "int8", "int8-checked", "auto")
INT8 = ("int8", "int8-checked")  # the modes that quantise, and so calibrate
CPU_ONLY = (*INT8, "winograd")
CALIBRATION_IMAGES = 32
CHECK_MARGIN = 0.01  # int8-checked: top-2 posterior margins under this are recomputed in fp32


def inference_precision(name: str, device: torch.device) -> str:
    """``auto`` resolved for ``device``; ``int8`` off the CPU is a one-line ValueError."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "winograd" if device.type == "cpu" else "fp32"
    if name in CPU_ONLY and device.type != "cpu":
        raise ValueError(f"{name} inference runs on the CPU only, not {device}; use --precision bf16 there")
    return name


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
