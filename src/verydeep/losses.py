"""Losses on very deep features: perceptual (Johnson et al. 2016), Gram-matrix style (Gatys et
al. 2016), total variation, and the unweighted LPIPS-style distance.

Each is an ``nn.Module`` over a ``Backbone`` (frozen VGG, inputs in the caller's value range);
gradients reach the images only. Layers and their weights are a dict, or a preset named after
the paper that chose them:

* ``perceptual``: mean over elements of (phi_l(x) - phi_l(y))^2, weighted and summed over layers
  (Johnson et al.'s feature reconstruction loss, 1/(C H W) ||.||^2 per image, batch mean).
* ``style``: Gram matrices G_l = F F^T / (C H W) of each layer's (C, H W) map F (Johnson et al.'s
  normalisation; Gatys et al.'s 1/(4 N^2 M^2) is this times a per-layer constant), the squared
  Frobenius distance between the images' Grams, weighted and summed over layers, batch mean.
* ``total_variation``: mean |x[i+1, j] - x[i, j]|^p + mean |x[i, j+1] - x[i, j]|^p, p = 1 or 2.
* ``lpips``: per layer, each position's channel vector divided by its L2 norm, the squared
  difference summed over channels and averaged over positions, summed over layers. This is
  LPIPS' "baseline" variant: LPIPS proper multiplies each channel by a weight learned on human
  judgements, which cannot be shipped here, so this is the unweighted distance, not LPIPS.

Example:
    >>> import torch
    >>> from verydeep.backbone import Backbone
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.losses import StyleLoss
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("E", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)
    >>> loss = StyleLoss(net, Preprocess.preset("caffe"), "gatys2016")
    >>> x = torch.rand(1, 3, 64, 64)
    >>> float(loss(x, x))
    0.0
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone
from .data.preprocess import Preprocess
from .models.vgg import VGG

PRESETS = {
    # Johnson et al. 2016, VGG-16: content at relu2_2 (their super-resolution: relu2_2 as well),
    # style at relu1_2, relu2_2, relu3_3, relu4_3
    "johnson2016-content": {"relu2_2": 1.0},
    "johnson2016": {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
    # Gatys et al. 2016, VGG-19: style at relu1_1 ... relu5_1 equally, content at relu4_2
    "gatys2016": {"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2, "relu5_1": 0.2},
    "gatys2016-content": {"relu4_2": 1.0},
    # LPIPS (Zhang et al. 2018) on VGG-16
    "lpips": {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0, "relu5_3": 1.0},
}


def layer_weights(layers: str | dict[str, float]) -> dict[str, float]:
    """A preset's name or a {layer: weight} dict -> {layer: weight} (weights must be >= 0)."""
    if isinstance(layers, str):
        if layers not in PRESETS:
            raise ValueError(f"unknown layer preset {layers!r}; presets: {', '.join(PRESETS)}")
        return dict(PRESETS[layers])
    if not layers or any(w < 0 for w in layers.values()):
        raise ValueError(f"layer weights must be a non-empty dict of weights >= 0, got {layers}")
    return dict(layers)


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): F F^T / (C H W), in float32 (bf16 sums of H W products drift)."""
    n, c, h, w = f.shape
    flat = f.float().reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class _FeatureLoss(nn.Module):
    def __init__(
        self, net: VGG, prep: Preprocess, layers: str | dict[str, float], value_range: str = "0,1"
    ) -> None:
        super().__init__()
        self.weights = layer_weights(layers)
        self.backbone = Backbone(net, prep, list(self.weights), value_range=value_range)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != y.shape[0] and y.shape[0] != 1:
            raise ValueError(f"batches of {x.shape[0]} and {y.shape[0]} images (the target may be 1)")
        fx, fy = self.backbone(x), self.backbone(y)
        total = x.new_zeros((), dtype=torch.float32)
        for name, w in self.weights.items():
            total = total + w * self.layer_loss(fx[name], fy[name])  # a target of 1 is broadcast
        return total

    def layer_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _same_size(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1:] != b.shape[1:]:
        sizes = f"{tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        raise ValueError(f"feature maps of {sizes}: the two images' sizes differ")


class PerceptualLoss(_FeatureLoss):
    """Feature reconstruction: mean squared difference of the layers' maps (default relu2_2)."""

    def __init__(self, net: VGG, prep: Preprocess, layers: str | dict = "johnson2016-content", **kw) -> None:
        super().__init__(net, prep, layers, **kw)

    def layer_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _same_size(a, b)
        return (a.float() - b.float()).pow(2).mean()


class StyleLoss(_FeatureLoss):
    """Squared Frobenius distance of Gram matrices (default Johnson et al.'s four layers); the
    two images may differ in size (a Gram matrix is C x C)."""

    def __init__(self, net: VGG, prep: Preprocess, layers: str | dict = "johnson2016", **kw) -> None:
        super().__init__(net, prep, layers, **kw)

    def layer_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (gram(a) - gram(b)).pow(2).sum((1, 2)).mean()


class LPIPSDistance(_FeatureLoss):
    """The unweighted LPIPS-style distance (see the module docstring); one value per image pair
    with ``reduction="none"``, else their mean."""

    def __init__(
        self, net: VGG, prep: Preprocess, layers: str | dict = "lpips", reduction: str = "mean", **kw
    ) -> None:
        super().__init__(net, prep, layers, **kw)
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be mean or none, got {reduction!r}")
        self.reduction = reduction

    def layer_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _same_size(a, b)
        na = a.float() / (a.float().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b.float() / (b.float().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = (na - nb).pow(2).sum(1).mean((1, 2))
        return d if self.reduction == "none" else d.mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = super().forward(x, y)
        return out if self.reduction == "mean" else out.reshape(-1)


class TotalVariation(nn.Module):
    """Mean |difference|^p of vertical and of horizontal neighbours, summed (p = 1 or 2)."""

    def __init__(self, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dh = (x[..., 1:, :] - x[..., :-1, :]).abs().pow(self.p).mean()
        dw = (x[..., :, 1:] - x[..., :, :-1]).abs().pow(self.p).mean()
        return dh + dw
