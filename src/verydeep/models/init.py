"""Weight initialisation schemes of Section 3.1, explicit and configurable.

The paper draws weights from a zero-mean normal with "variance 1e-2"; the authors' released
Caffe solvers use std 0.01, so ``std`` defaults to 0.01 (pass 0.1 for the literal reading).
Glorot (Xavier) initialisation is the scheme the authors later found to work without
pre-training. ``init_from_net_a`` copies the first four conv layers and the three FC layers of a
trained net A into a deeper net.

The paper does not say how "the first four conv layers" of A map onto a deeper net. We match by
Caffe layer name (A's conv1_1, conv2_1, conv3_1, conv3_2 go to the same-named layers of B-E),
which is the only mapping under which every copied tensor has the right shape.

Example:
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.models.init import init_weights, init_from_net_a
    >>> a = VGG("A", num_classes=10, width_mult=0.125, fc_width=32, crop_size=32)
    >>> d = VGG("D", num_classes=10, width_mult=0.125, fc_width=32, crop_size=32)
    >>> init_weights(d, "glorot")
    >>> init_from_net_a(d, a)
    ['conv1_1', 'conv2_1', 'conv3_1', 'conv3_2', 'classifier.0', 'classifier.3', 'classifier.6']
"""

from __future__ import annotations

import torch
from torch import nn

from .vgg import VGG

SCHEMES = ("normal", "glorot", "kaiming")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "normal", std: float = 0.01) -> None:
    """Initialise conv and linear weights with ``scheme``; biases zero, BN to identity.

    ``kaiming`` is torchvision's scheme: fan-out Kaiming for convs, normal(0, std) for FC layers.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, std)
            elif scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:  # as torchvision: fan-out Kaiming on a 2-way FC8 would give std 1
                nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def init_from_net_a(model: VGG, net_a: VGG, n_conv: int = 4, fc: bool = True) -> list[str]:
    """Copy the first ``n_conv`` conv layers of ``net_a`` (by name) and its FC layers.

    Returns the names of the copied layers. A shape mismatch is an error, except for FC8 when
    the class counts differ (it stays random, as when fine-tuning to a new label set).
    """
    if net_a.letter not in ("A", "A-LRN"):
        raise ValueError(f"init_from_net_a expects net A, got config {net_a.arch}")
    src, dst = net_a.conv_layers(), model.conv_layers()
    copied = []
    for name in list(src)[:n_conv]:
        s, d = src[name], dst.get(name)
        if d is None or s.weight.shape != d.weight.shape:
            got = None if d is None else tuple(d.weight.shape)
            raise ValueError(f"{name}: net A has {tuple(s.weight.shape)}, target has {got}")
        d.weight.copy_(s.weight)
        d.bias.copy_(s.bias)
        copied.append(name)
    for i in (0, 3, 6) if fc else ():
        s, d = net_a.classifier[i], model.classifier[i]
        if s.weight.shape != d.weight.shape:
            if i == 6:
                continue
            raise ValueError(
                f"classifier.{i}: shapes differ {tuple(s.weight.shape)} vs {tuple(d.weight.shape)}"
            )
        d.weight.copy_(s.weight)
        d.bias.copy_(s.bias)
        copied.append(f"classifier.{i}")
    return copied
