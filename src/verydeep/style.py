"""Neural style transfer (Gatys et al. 2016): an image optimised so that its VGG features match a
content image's and its Gram matrices a style image's.

The image x (RGB in [0, 1], starting from the content image or from noise) minimises
``content_weight * perceptual(x, content) + style_weight * style(x, style) + tv_weight * TV(x)``
(``losses.py``) with L-BFGS (the paper's choice) or Adam, kept in [0, 1] after every step. The
net is frozen; only the pixels change. The same seed gives the same image on one machine.

With ``normalize="target"`` (the default) each layer's term is divided by its target's own
loss against a zero map (mean square of the content map; squared Frobenius norm of the style
Gram), so both terms are relative errors. Feature magnitudes follow the net's input convention
(fed 0-255 pixels rather than standardised ones, the same weights give maps ~57x and Grams
~3,300x larger), so raw weights found for one net mean nothing for another; relative ones carry.

Example:
    >>> import torch
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.style import StyleConfig, stylise
    >>> net = VGG("E", num_classes=5, width_mult=0.0625, fc_width=16, crop_size=32)
    >>> content, style = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 40)
    >>> out = stylise(net, Preprocess(), content, style, StyleConfig(steps=2, optimizer="adam"))
    >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
    (torch.Size([1, 3, 40, 48]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .backbone import Backbone
from .data.images import load_image
from .data.preprocess import Preprocess
from .losses import TotalVariation, gram, layer_weights
from .models.vgg import VGG
from .ranges import check, spec


@dataclass(frozen=True)
class StyleConfig:
    steps: int = spec(300, lo=1, hi=100_000)  # optimiser steps (L-BFGS: function evaluations)
    optimizer: str = spec("lbfgs", choices=("lbfgs", "adam"))
    lr: float = spec(1.0, gt=0, hi=100)  # L-BFGS step size; Adam's is this / 50
    content_layers: str | dict = "gatys2016-content"  # a preset of losses.PRESETS or {layer: weight}
    style_layers: str | dict = "gatys2016"
    content_weight: float = spec(1.0, lo=0, hi=1e12)
    style_weight: float = spec(1e3, lo=0, hi=1e12)
    # "target": each layer's term divided by its target's energy, so weights mean the same for
    # every input convention; "none": the losses as the papers write them
    normalize: str = spec("target", choices=("target", "none"))
    tv_weight: float = spec(0.0, lo=0, hi=1e12)
    init: str = spec("content", choices=("content", "noise"))
    seed: int = spec(0, lo=0, hi=2**32 - 1)

    def __post_init__(self) -> None:
        check(self, "style")
        layer_weights(self.content_layers), layer_weights(self.style_layers)  # one-line errors now


def stylise(
    net: VGG,
    prep: Preprocess,
    content: torch.Tensor,
    style: torch.Tensor,
    cfg: StyleConfig,
    progress: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: ``content`` restyled after ``style`` (both RGB in [0, 1]).
    ``progress(step, loss)`` is called after each step."""
    torch.manual_seed(cfg.seed)
    content_w, style_w = layer_weights(cfg.content_layers), layer_weights(cfg.style_layers)
    # one pass over the net per step for every layer of both losses; the targets once, up front
    vgg = Backbone(net, prep, list(dict.fromkeys([*content_w, *style_w])))
    with torch.no_grad():
        fc = {k: v.float() for k, v in vgg(content).items() if k in content_w}
        grams = {k: gram(v) for k, v in vgg(style).items() if k in style_w}
        # per-layer scales: 1, or the target's mean square (its loss against a zero map)
        rel = cfg.normalize == "target"
        c_scale = {k: float(v.pow(2).mean().clamp_min(1e-12)) if rel else 1.0 for k, v in fc.items()}
        s_scale = {k: float(g.pow(2).sum().clamp_min(1e-24)) if rel else 1.0 for k, g in grams.items()}
    tv = TotalVariation(p=2)
    # contiguous: L-BFGS flattens the gradient with a view
    same = content.clone(memory_format=torch.contiguous_format)
    start = same if cfg.init == "content" else torch.rand(content.shape)
    x = start.requires_grad_(True)

    def objective() -> torch.Tensor:
        fx = vgg(x)
        c = sum(w * (fx[k].float() - fc[k]).pow(2).mean() / c_scale[k] for k, w in content_w.items())
        s = sum(w * (gram(fx[k]) - grams[k]).pow(2).sum() / s_scale[k] for k, w in style_w.items())
        loss = cfg.content_weight * c + cfg.style_weight * s
        return loss + cfg.tv_weight * tv(x) if cfg.tv_weight else loss

    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([x], lr=cfg.lr / 50)
    else:
        opt = torch.optim.LBFGS([x], lr=cfg.lr, max_iter=1, history_size=50)
    for step in range(1, cfg.steps + 1):

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        loss = float(opt.step(closure).detach())
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if not math.isfinite(loss):
            raise ValueError(f"the loss is {loss} at step {step}; lower --style-weight or --lr")
        if progress is not None:
            progress(step, loss)
    return x.detach()


def load_pair(content: str | Path, style: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two images as (1, 3, H, W) RGB in [0, 1]: the content's long side ``size`` px, the
    style image rescaled to the same long side (its Gram matrices need no common size)."""
    out = []
    for path in (content, style):
        img = load_image(path)
        scale = size / max(img.size)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC if scale > 1 else Image.LANCZOS)
        out.append(TF.pil_to_tensor(img).float().div(255)[None].contiguous())
    return out[0], out[1]


def side_by_side(*images: torch.Tensor, gap: int = 4) -> torch.Tensor:
    """(1, 3, H_i, W_i) images in [0, 1], each rescaled to the first one's height, left to right
    on white with ``gap`` px between them."""
    h = images[0].shape[-2]
    parts = []
    for x in images:
        w = max(1, round(x.shape[-1] * h / x.shape[-2]))
        parts += [TF.resize(x, [h, w], antialias=True).clamp(0, 1), torch.ones(1, 3, h, gap)]
    return torch.cat(parts[:-1], dim=-1)
