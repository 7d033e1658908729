"""The paper's test-time methods (Section 3.2) on batches of same-size uint8 images.

Every function takes images already rescaled to one test scale Q (smallest side Q pixels),
uint8 (N, C, H, W) in RGB order, and returns soft-max posteriors (N, classes):

- ``centre_probs``: one centre crop of the crop size (the torchvision-style baseline);
- ``dense_probs``: the rescaled image, trimmed to the pixels its windows cover (``window_trim``),
  through the fully-convolutional net; the class score map is
  spatially averaged and soft-maxed (``average="scores"``, the paper), or soft-maxed at every
  position and then averaged (``average="softmax"``); the horizontal flip is averaged in;
- ``multicrop_probs``: crops on a regular ``grid`` x ``grid`` grid (``grid_offsets``), each also
  flipped, posteriors averaged (5x5x2 = 50 per scale in the paper).

``dense_pooled`` is the reusable core (flip-averaged, spatially averaged FC8 scores or FC7
features) and ``dense_scores`` runs it on one image at a list of scales.

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.data.preprocess import Preprocess
    >>> net = VGG("A", num_classes=4, width_mult=0.125, fc_width=16, crop_size=32).eval()
    >>> x = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    >>> dense_probs(net, x, Preprocess()).shape, multicrop_probs(net, x, Preprocess()).shape
    (torch.Size([2, 4]), torch.Size([2, 4]))
    >>> grid_offsets(56, 32)  # 5 evenly spaced offsets from 0 to side - crop
    [0, 6, 12, 18, 24]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from ..data.preprocess import Preprocess
from ..data.transforms import rescale_smallest, scale_crop_flip
from ..models.layers import CONV_STAGE, extract
from ..models.vgg import VGG
from ..numerics import FP32, Numerics

AVERAGES = ("scores", "softmax")
ALIGNS = ("centre", "topleft")


def window_trim(x: torch.Tensor, crop: int, stride: int = 32, align: str = "centre") -> torch.Tensor:
    """Cut the border pixels that no dense window sees, equally on both sides (``centre``).

    The dense net's windows are ``crop`` wide at a ``stride`` of 32 (five pools), so of a side
    of ``crop + 32 k + r`` pixels the last ``r`` are never seen: the pools drop them at the
    bottom and right (``topleft``, what a plain fully-convolutional pass does). With ``centre``
    the ``r`` pixels are taken half from each border instead. Nothing changes when ``r = 0``
    (the paper's sizes: 256, 384, 512 at crop 224); at small crops it matters: a 37 px
    Fashion-MNIST image at crop 32 is one window, the top-left 32 px, unless centred.
    """
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    h, w = x.shape[-2:]
    if align == "topleft" or h < crop or w < crop:
        return x
    th, tw = crop + (h - crop) // stride * stride, crop + (w - crop) // stride * stride
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


def grid_offsets(side: int, crop: int, n: int = 5) -> list[int]:
    """``n`` evenly spaced crop offsets from 0 to ``side - crop`` (rounded half up).

    The first and last crops touch the image borders; ``n=1`` gives the centre crop at
    torchvision's ``CenterCrop`` placement (``round(span / 2)``, halves to even), the same
    pixels as the ``centre`` method.
    """
    if side < crop:
        raise ValueError(f"image side {side} px is smaller than the crop {crop} px")
    span = side - crop
    if n == 1:
        return [round(span / 2.0)]  # torchvision's CenterCrop expression: Python rounds halves to even
    return [(2 * i * span + n - 1) // (2 * (n - 1)) for i in range(n)]


def grid_crops(x: torch.Tensor, crop: int, n: int = 5) -> torch.Tensor:
    """(N, C, H, W) -> (N, n*n, C, crop, crop): the grid crops, row-major over (top, left)."""
    tops, lefts = grid_offsets(x.shape[-2], crop, n), grid_offsets(x.shape[-1], crop, n)
    crops = [x[..., t : t + crop, s : s + crop] for t in tops for s in lefts]
    return torch.stack(crops, 1)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Greyscale -> RGB by replication, RGB -> greyscale by ITU-R 601 luma (as PIL's ``L``)."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(3, 1, 1)
        return (x.float() * w).sum(-3, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot feed {c}-channel images to a {channels}-channel net")


def rescale(img: Image.Image | torch.Tensor, q: int) -> torch.Tensor:
    """Isotropic rescale to smallest side ``q`` -> uint8 (C, H, W) or (N, C, H, W).

    PIL images go through PIL (antialiased bilinear, as the training loader does); square tensor
    batches (Fashion-MNIST) through ``scale_crop_flip``, the in-memory training path, so test
    images are resampled exactly like training images; other tensors through torchvision.
    """
    if isinstance(img, Image.Image):
        return TF.pil_to_tensor(rescale_smallest(img, q))
    if img.shape[-1] == img.shape[-2]:
        batch = img if img.dim() == 4 else img[None]
        n = len(batch)
        zero = torch.zeros(n, dtype=torch.long)
        out = scale_crop_flip(batch, q, torch.full((n,), q), zero, zero, torch.zeros(n, dtype=torch.bool))
        return out if img.dim() == 4 else out[0]
    return rescale_smallest(img, q)


class Runtime:
    """Where and how forward passes run: the device, the resolved ``numerics`` (autocast, the
    GPU's fp32 math, channels_last), and the memory one dense forward pass may take
    (``memory_cap`` bytes; None: half of the GPU's free memory, a quarter of the machine's RAM
    on the CPU)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        numerics: Numerics = FP32,
        memory_cap: int | None = None,
    ):
        self.device, self.numerics, self.memory_cap = torch.device(device), numerics, memory_cap

    @property
    def channels_last(self) -> bool:
        return self.numerics.channels_last

    def images_per_forward(self, height: int, width: int) -> int:
        """How many images of this size one dense forward pass may hold: the first block's maps
        (64 channels at full resolution, two of them live at once, plus the input) dominate."""
        cap = self.memory_cap
        if cap is None:
            if self.device.type == "cuda":
                cap = torch.cuda.mem_get_info(self.device)[0] // 2
            else:
                cap = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        per_image = (2 * 64 + 3) * height * width * (2 if self.numerics.amp_dtype else 4)
        return max(0, cap // per_image)

    def input(self, x: torch.Tensor, prep: Preprocess) -> torch.Tensor:
        """uint8 batch -> normalised float input on the device."""
        x = prep(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.numerics.context(self.device)


CPU = Runtime()


def recheck(model: nn.Module, probs: torch.Tensor, again: Callable) -> torch.Tensor:
    """``probs`` (N, classes) of ``model``, where ``model`` is an ``int8-checked`` net, with its
    near-ties recomputed by its exact net: the rows whose top-2 posterior margin is under
    ``model.check_margin``, as ``again(exact_net, rows)``. Any other net's ``probs`` unchanged.

    A near-tie is where int8's rounding can flip the top-1 class; recomputing only those keeps
    most of int8's speed and nearly all of fp32's decisions (docs/BENCHMARKS.md).
    """
    exact = getattr(model, "exact", None)
    if exact is None or probs.shape[1] < 2:
        return probs
    top = probs.topk(2, dim=1).values
    rows = (top[:, 0] - top[:, 1] < model.check_margin).nonzero()[:, 0]
    model.checked += len(probs)
    model.rechecked += len(rows)
    if len(rows) == 0:
        return probs
    out = probs.clone()
    out[rows] = again(exact, rows)
    return out


def _with_flip(x: torch.Tensor, flip: bool) -> torch.Tensor:
    return torch.cat([x, x.flip(-1)]) if flip else x


def _unflip_mean(p: torch.Tensor, flip: bool) -> torch.Tensor:
    """Average the rows of an image and of its flip (stacked as [all images, all flips])."""
    return p.view(2, -1, *p.shape[1:]).mean(0) if flip else p


def dense_maps(
    model: VGG, x: torch.Tensor, prep: Preprocess, *, upto: int = 3, flip: bool = False, rt: Runtime = CPU
) -> torch.Tensor:
    """Score map (N, classes, h, w) (``upto=3``) or FC7 map (``upto=2``) of whole images.

    With ``flip`` the flipped image's map is flipped back and averaged in (exactly aligned only
    when (W - crop) is a multiple of 32; meant for pictures, not for numbers).
    """
    with rt.autocast():
        maps = model.dense_head(model.features(rt.input(_with_flip(x, flip), prep)), upto=upto).float()
    if flip:
        n = len(x)
        maps = (maps[:n] + maps[n:].flip(-1)) / 2
    return maps


def dense_pooled(
    model: VGG,
    x: torch.Tensor,
    prep: Preprocess,
    *,
    output: str = "probs",
    flip: bool = True,
    average: str = "scores",
    align: str = "centre",
    rt: Runtime = CPU,
) -> torch.Tensor:
    """One vector per image from the dense net: the engine of dense evaluation.

    ``output``: ``probs`` (soft-max posteriors, paper), ``scores`` (spatially averaged class
    scores, no soft-max), ``fc7`` (spatially averaged FC7 features, Appendix B), ``fc6``, or a
    conv-stage layer by name (``pool1`` ... ``pool5``, ``relu4_3``, ``conv3_1``, ...; its map
    averaged over positions; not in the paper). The image and its flip are averaged at the end
    (posteriors for ``probs``).
    ``average`` only matters for ``probs``: ``scores`` = average the map then soft-max (paper),
    ``softmax`` = soft-max at every position then average. ``align``: which border pixels the
    windows leave out (``window_trim``).
    """
    x = window_trim(x, model.crop_size, 32, align)
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if output not in HEADS and not CONV_STAGE.match(output):
        known = ", ".join(HEADS)
        raise ValueError(f"output must be one of {known} or a conv-stage layer name, got {output!r}")
    kw = {"output": output, "average": average, "rt": rt}
    fits = rt.images_per_forward(*x.shape[-2:])

    def one_pass(c: torch.Tensor) -> torch.Tensor:
        if flip and fits < 2:  # not even an image and its flip together: one, then the other
            mirrored = _pooled(model, c.flip(-1), prep, flip=False, **kw)
            return (_pooled(model, c, prep, flip=False, **kw) + mirrored) / 2
        return _pooled(model, c, prep, flip=flip, **kw)

    step = max(1, fits // (2 if flip else 1))  # a large Q: fewer images per pass
    return torch.cat([one_pass(c) for c in x.split(step)]) if step < len(x) else one_pass(x)


HEADS = {"probs": 3, "scores": 3, "fc7": 2, "fc6": 1}  # how many FC layers run


def _pooled(
    model: VGG, x: torch.Tensor, prep: Preprocess, *, output: str, flip: bool, average: str, rt: Runtime
) -> torch.Tensor:
    """``dense_pooled`` of trimmed images in one forward pass (image and flip stacked)."""
    heads = HEADS
    with rt.autocast():
        x_in = rt.input(_with_flip(x, flip), prep)
        if output == "pool5":  # the whole body: every precision's net has it (int8's is one module)
            maps = model.features(x_in).float()
        elif output not in heads:  # conv1_1 ... pool4: the named layer's map
            maps = extract(model, x_in, [output], train_weights=True)[output].float()
        else:
            maps = model.dense_head(model.features(x_in), upto=heads[output]).float()
    if output != "probs":
        return _unflip_mean(maps.mean((2, 3)), flip)
    v = maps.mean((2, 3)).softmax(1) if average == "scores" else maps.softmax(1).mean((2, 3))
    return recheck(
        model,
        _unflip_mean(v, flip),
        lambda net, rows: _pooled(net, x[rows], prep, output=output, flip=flip, average=average, rt=rt),
    )


def dense_probs(
    model: VGG,
    x: torch.Tensor,
    prep: Preprocess,
    *,
    flip: bool = True,
    average: str = "scores",
    align: str = "centre",
    rt: Runtime = CPU,
) -> torch.Tensor:
    """Dense evaluation posteriors (N, classes) of same-size images (Section 3.2)."""
    return dense_pooled(model, x, prep, output="probs", flip=flip, average=average, align=align, rt=rt)


def crop_probs(
    model: VGG, crops: torch.Tensor, prep: Preprocess, *, flip: bool = True, rt: Runtime = CPU
) -> torch.Tensor:
    """Posteriors (M, classes) of crop-size crops, each averaged with its flip if ``flip``."""
    with rt.autocast():
        logits = model(rt.input(_with_flip(crops, flip), prep)).float()
    probs = _unflip_mean(logits.softmax(1), flip)
    return recheck(model, probs, lambda net, rows: crop_probs(net, crops[rows], prep, flip=flip, rt=rt))


def multicrop_probs(
    model: VGG,
    x: torch.Tensor,
    prep: Preprocess,
    *,
    grid: int = 5,
    flip: bool = True,
    chunk: int = 256,
    rt: Runtime = CPU,
) -> torch.Tensor:
    """Multi-crop posteriors (N, classes): mean over grid x grid crops (and their flips)."""
    crops = grid_crops(x, model.crop_size, grid).flatten(0, 1)
    probs = torch.cat([crop_probs(model, c, prep, flip=flip, rt=rt) for c in crops.split(chunk)])
    return probs.view(len(x), grid * grid, -1).mean(1)


def centre_probs(
    model: VGG, x: torch.Tensor, prep: Preprocess, *, flip: bool = False, rt: Runtime = CPU
) -> torch.Tensor:
    """Centre-crop posteriors (N, classes), torchvision's ``CenterCrop`` placement."""
    crop = model.crop_size
    return crop_probs(model, TF.center_crop(x, [crop, crop]), prep, flip=flip, rt=rt)
