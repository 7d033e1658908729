"""``verydeep.load``: a checkpoint's net, its preprocessing and its class names in one call.

What torchvision's ``weights.transforms()`` and timm's ``resolve_data_config`` give their users:
the transform is built from the checkpoint's own metadata (RGB or BGR order, pixel range, mean,
std, training scale), so an imported Caffe net and a torchvision one are fed correctly alike.

Example:
    >>> import tempfile, os, torch
    >>> from PIL import Image
    >>> import verydeep
    >>> from verydeep.io.checkpoint import Meta, save_model
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> net = verydeep.VGG("A", 3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> save_model(path, net, Meta(classes=list("abc")))
    >>> net, transform, classes = verydeep.load(path)
    >>> x = transform(Image.new("RGB", (64, 48)))     # rescale to Q, centre crop, normalise
    >>> x.shape, net(x[None]).shape, classes
    (torch.Size([3, 32, 32]), torch.Size([1, 3]), ['a', 'b', 'c'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2 as v2
from torch import nn

from .config import pixels
from .data.preprocess import Preprocess
from .io.checkpoint import Meta, load_model
from .models.vgg import VGG


class Normalise(nn.Module):
    """uint8 (C, H, W) or (N, C, H, W) RGB -> the net's input (``Preprocess``: order, range, mean, std)."""

    def __init__(self, prep: Preprocess) -> None:
        super().__init__()
        self.prep = prep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prep(x[None])[0] if x.dim() == 3 else self.prep(x)

    def extra_repr(self) -> str:
        p = self.prep
        return f"bgr={p.bgr}, pixel_range={p.pixel_range:g}, mean={list(p.mean)}, std={list(p.std)}"


def net_transform(meta: Meta, crop_size: int, in_channels: int = 3, crop: bool = True) -> v2.Compose:
    """PIL image, array or uint8 tensor -> the net's input: smallest side rescaled to the test
    scale Q (S, or the middle of [Smin, Smax]; antialiased bilinear, as verydeep evaluates),
    centre-cropped to ``crop_size`` for the FC form (``crop=False``: whole, for ``dense_forward``),
    normalised as the checkpoint says."""
    s = meta.train_scale
    q = pixels((s[0] + s[-1]) / 2, crop_size)
    # a PIL image is resized by PIL (as evaluation and torchvision's presets do), then made a tensor
    steps: list = [v2.Grayscale(1) if in_channels == 1 else v2.RGB()]
    steps.append(v2.Resize(q, interpolation=v2.InterpolationMode.BILINEAR, antialias=True))
    if crop:
        steps.append(v2.CenterCrop(crop_size))
    return v2.Compose([*steps, v2.ToImage(), Normalise(meta.prep)])


@dataclass(frozen=True)
class Loaded:
    """Unpacks as ``model, transform, classes``; ``meta`` holds the rest (scales, config, source)."""

    model: VGG  # in eval mode, on the device asked for
    transform: v2.Compose  # image -> input tensor (C, crop, crop)
    classes: list[str]
    meta: Meta

    def __iter__(self) -> Iterator:
        return iter((self.model, self.transform, self.classes))


def load(path: str | Path, device: str | torch.device = "cpu", *, crop: bool = True) -> Loaded:
    """Load a verydeep checkpoint (``verydeep convert`` imports any other weights first):
    ``model, transform, classes = verydeep.load(path)``, as torchvision users would."""
    model, meta = load_model(path, device)
    transform = net_transform(meta, model.crop_size, model.in_channels, crop)
    classes = list(meta.classes) or [f"class_{i}" for i in range(model.num_classes)]
    return Loaded(model, transform, classes, meta)
