"""A perceptual-loss step: VGG-16 up to relu4_3 on a batch of images, forward and the gradient
with respect to the images (the weights frozen), as a super-resolution or style network's
training loop runs it for every batch.

torchvision's step is what its users write: ``create_feature_extractor(vgg16(), {"features.22":
"relu4_3"})`` on standardised inputs, weights with ``requires_grad=False``. verydeep's is
``Backbone`` (``backbone.py``) as a loss builds it, in each mode it can run here: direct fp32
convolutions, Winograd's (``winograd="auto"`` picks them on CPUs without native bf16), and bf16
autocast where bf16 is native. Both compute the same loss on the same weights.

Example:
    >>> import torch
    >>> from verydeep.bench.config import BenchConfig
    >>> from verydeep.bench.loss_bench import bench_perceptual
    >>> r = bench_perceptual(BenchConfig.make(quick=True, rounds=1), torch.device("cpu"))
    >>> {"torchvision_fp32", "verydeep_fp32"} <= set(r["variants"]), r["layer"]
    (True, 'relu4_3')
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from ..backbone import Backbone
from ..hardware import native_bf16
from ..models.layers import feature_names
from .config import BenchConfig
from .nets import PREP, build_pair
from .timing import interleaved, median, paired_ratio

LAYER = "relu4_3"


def _torchvision_step(tv: nn.Module, index: int, x: torch.Tensor, target: torch.Tensor) -> Callable:
    """The loss through torchvision's feature extractor: features.``index`` is relu4_3."""
    # on its features: the same graph as the whole net's "features.22" (the rest is pruned), and
    # the quick bench's stand-in (verydeep's VGG, whose forward FX cannot trace) has them too
    body = create_feature_extractor(tv.eval().requires_grad_(False).features, {str(index): LAYER})
    mean = torch.tensor(PREP.mean, device=x.device).view(1, 3, 1, 1) / 255.0
    std = torch.tensor(PREP.std, device=x.device).view(1, 3, 1, 1) / 255.0

    def step() -> torch.Tensor:
        xi = x.detach().requires_grad_()
        loss = F.mse_loss(body((xi - mean) / std)[LAYER], target)
        return torch.autograd.grad(loss, xi)[0]

    return step


def _verydeep_step(vgg: Backbone, x: torch.Tensor, target: torch.Tensor, amp: torch.dtype | None) -> Callable:
    def step() -> torch.Tensor:
        xi = x.detach().requires_grad_()
        with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = F.mse_loss(vgg(xi)[LAYER].float(), target)
        return torch.autograd.grad(loss, xi)[0]

    return step


def perceptual_steps(cfg: BenchConfig, device: torch.device) -> tuple[dict[str, Callable], int, int]:
    """({variant: step -> input gradient}, batch, size): the steps ``bench_perceptual`` times."""
    tv, vd = build_pair("D", **cfg.model_kwargs)
    tv, vd = tv.to(device), vd.to(device).eval()
    size, batch = (256, 4) if not cfg.quick else (2 * cfg.crop, 2)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    index = feature_names(vd).index(LAYER)
    vgg = {mode: Backbone(vd, PREP, [LAYER], winograd=mode) for mode in ("false", "auto", "true")}
    with torch.no_grad():
        target = vgg["false"](torch.rand(batch, 3, size, size, generator=g).to(device))[LAYER]
    fns = {"torchvision_fp32": _torchvision_step(tv, index, x, target)}
    fns["verydeep_fp32"] = _verydeep_step(vgg["false"], x, target, None)
    # what a loss runs by default here (a CPU without native bf16), or every mode if asked
    if vgg["auto"]._winograd_net(device) is not None or (cfg.all_modes and device.type == "cpu"):
        fns["verydeep_winograd"] = _verydeep_step(vgg["true"], x, target, None)
    if device.type == "cuda" or native_bf16(device) or cfg.all_modes:
        fns["verydeep_bf16_autocast"] = _verydeep_step(vgg["false"], x, target, torch.bfloat16)
    return fns, batch, size


def bench_perceptual(cfg: BenchConfig, device: torch.device, progress: Callable | None = None) -> dict:
    """Images/s of the step in each variant, and verydeep's best over torchvision's (paired)."""
    fns, batch, size = perceptual_steps(cfg, device)
    times = interleaved(fns, cfg.rounds, warmup=1, device=device, progress=progress)
    ratios = {n: paired_ratio(times, "torchvision_fp32", n) for n in fns if n.startswith("verydeep")}
    best = max(ratios, key=ratios.__getitem__)
    return {
        "layer": LAYER,
        "batch": batch,
        "size": size,
        "variants": {n: {"per_s": batch / median(ts), "samples": ts} for n, ts in times.items()},
        "speedups": ratios,
        "best": best,
        "speedup": ratios[best],
    }
