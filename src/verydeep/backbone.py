"""A checkpoint as a frozen feature backbone: images in the caller's range, named layers out.

Perceptual and style losses feed a VGG images from a generator, in [-1, 1] or [0, 1], RGB. The
net wants its own convention: torchvision's RGB 0-1 standardised, or Caffe's BGR 0-255 minus the
mean pixel. ``to_net_input`` converts once, by the checkpoint's metadata, so that the same image
gives the same features from a Caffe import and a torchvision import of the same weights.

Example:
    >>> import torch
    >>> from verydeep.backbone import Backbone
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)
    >>> vgg = Backbone(net, Preprocess.preset("caffe"), ["relu1_2", "relu2_2"], value_range="-1,1")
    >>> feats = vgg(torch.rand(2, 3, 48, 48) * 2 - 1)     # a generator's output, RGB in [-1, 1]
    >>> [tuple(v.shape) for v in feats.values()]
    [(2, 8, 48, 48), (2, 16, 24, 24)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .data.preprocess import Preprocess
from .io.checkpoint import load_model
from .models.layers import check_layers, extract, feature_names
from .models.vgg import VGG
from .models.winograd import WinogradConv2d, winograd_convs
from .numerics import resolve

# what the caller's tensor holds, as (low, high) of its pixel values; RGB, (N, 3, H, W)
VALUE_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}


def to_net_input(x: torch.Tensor, prep: Preprocess, value_range: str = "0,1") -> torch.Tensor:
    """RGB images with values in ``value_range`` -> the net's input (order, range, mean, std).
    Differentiable; the caller's tensor is not changed."""
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {', '.join(VALUE_RANGES)}, got {value_range!r}")
    lo, hi = VALUE_RANGES[value_range]
    return prep((x - lo) * (255.0 / (hi - lo)))  # 0-255 RGB, what Preprocess reads


class Backbone(nn.Module):
    """``net`` frozen, fed by ``to_net_input``: ``forward(x)`` -> {layer name: map}.

    The wrapped net stays as it was given; its weights get no gradient unless ``train_weights``.
    It is a submodule (``.to(device)`` moves it), so a model that holds a Backbone lists the
    net's weights among its parameters: build an optimiser from the parameters being trained.

    ``winograd``: ``auto`` (default) runs the convolutions as ``verydeep train`` does on this
    device: Winograd F(4x4, 3x3) with fused transforms on CPUs without native bf16 (fp32, outside
    autocast; the same numbers up to fp32 rounding), the net's own convs elsewhere; ``true`` /
    ``false`` force it. The fast copy shares the net's weights (no second copy in memory)."""

    def __init__(
        self,
        net: VGG,
        prep: Preprocess,
        layers: Sequence[str],
        *,
        value_range: str = "0,1",
        train_weights: bool = False,
        winograd: str = "auto",
    ) -> None:
        super().__init__()
        if value_range not in VALUE_RANGES:
            raise ValueError(f"value_range must be one of {', '.join(VALUE_RANGES)}, got {value_range!r}")
        self.net, self.prep, self.value_range = net, prep, value_range
        if winograd not in ("auto", "true", "false"):
            raise ValueError(f"winograd must be auto, true or false, got {winograd!r}")
        self.layers = check_layers(net, layers)
        self.train_weights, self.winograd = train_weights, winograd
        self._fast: tuple[torch.device, nn.Module | None] | None = None  # built on first use

    @classmethod
    def from_checkpoint(cls, path: str | Path, layers: Sequence[str], **kwargs: object) -> Backbone:
        """A verydeep checkpoint (``verydeep convert`` imports any other) with its own convention."""
        net, meta = load_model(path)
        return cls(net, meta.prep, layers, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_net_input(x, self.prep, self.value_range)
        net = self.net
        if not torch.is_autocast_enabled(x.device.type):  # Winograd sums in bf16 lose precision
            net = self._winograd_net(x.device) or net
        return extract(net, x, self.layers, train_weights=self.train_weights)

    def _winograd_net(self, device: torch.device) -> nn.Module | None:
        """The Winograd copy for ``device`` (None where it is not used), sharing the weights."""
        if self._fast is None or self._fast[0] != device:
            # an fp32 forward and backward, as training's: its winograd key decides the same way
            use = resolve("fp32", device, winograd=self.winograd, training=True).winograd
            self._fast = (device, fast_copy(self.net, self.layers) if use else None)
        return self._fast[1]


def fast_copy(net: VGG, layers: Sequence[str]) -> VGG:
    """``winograd_convs(net)`` with the same Parameter objects (a view of the net, not a copy of
    its weights). A conv asked for by name keeps its ReLU apart, so its output is pre-ReLU."""
    shared = {id(t): t for t in [*net.parameters(), *net.buffers()]}
    fast = winograd_convs(net, memo=shared)
    for i, name in enumerate(feature_names(fast)):
        m = fast.features[i]
        if name in layers and isinstance(m, WinogradConv2d) and m.relu:
            m.relu = False
            fast.features[i + 1] = nn.ReLU()
    return fast
