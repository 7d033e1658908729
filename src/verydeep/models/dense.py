"""Explicit conversion between the FC form and a fully-convolutional ``nn.Module``.

``VGG.dense_forward`` already evaluates densely through weight views; this module gives a
standalone ``DenseVGG`` with real ``Conv2d`` layers (FC6 as k x k, FC7/FC8 as 1x1), which is
what ONNX export and ``torch.export`` want, and converts it back exactly (timm's ConvMlp idea).

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.models.dense import to_dense, to_fc
    >>> net = VGG("A", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()
    >>> dense = to_dense(net).eval()
    >>> x = torch.randn(1, 3, 32, 32)
    >>> torch.allclose(dense(x).flatten(1), net(x), atol=1e-5)
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .vgg import VGG


class DenseVGG(nn.Module):
    """``features`` followed by FC6-FC8 as convolutions; returns the class score map."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential, kernel: int) -> None:
        super().__init__()
        self.features, self.head, self.kernel = features, head, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_dense(model: VGG) -> DenseVGG:
    """Copy ``model`` into a ``DenseVGG``; Linear weights are reshaped, not re-learned."""
    convs = []
    for (w, b), lin_idx in zip(model.fc_as_conv(), (0, 3, 6), strict=True):
        conv = nn.Conv2d(w.shape[1], w.shape[0], kernel_size=w.shape[-1])
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        convs.append(conv.to(model.classifier[lin_idx].weight.device))
    c = model.classifier
    head = nn.Sequential(convs[0], copy.deepcopy(c[1]), copy.deepcopy(c[2]), convs[1])
    head.extend([copy.deepcopy(c[4]), copy.deepcopy(c[5]), convs[2]])
    return DenseVGG(copy.deepcopy(model.features), head, model.kernel)


def to_fc(dense: DenseVGG, model: VGG) -> VGG:
    """Load a ``DenseVGG``'s weights back into the FC-form ``model`` (same config); returns it."""
    model.features.load_state_dict(dense.features.state_dict())
    with torch.no_grad():
        for conv_idx, lin_idx in ((0, 0), (3, 3), (6, 6)):
            conv, lin = dense.head[conv_idx], model.classifier[lin_idx]
            lin.weight.copy_(conv.weight.reshape(lin.weight.shape))
            lin.bias.copy_(conv.bias)
    return model
