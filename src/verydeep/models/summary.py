"""Tables 1 and 2 of the paper regenerated from the code, plus analytic FLOPs.

Example:
    >>> from verydeep.models.summary import table2
    >>> [(r["config"], r["params"]) for r in table2() if r["config"] in ("D", "E")]
    [('D', 138357544), ('E', 143667240)]
"""

from __future__ import annotations

import torch
from torch import nn

from .vgg import CFGS, VGG
from .winograd import WinogradConv2d

WEIGHT_LAYERS = {k: sum(i not in ("M", "LRN") for i in v) + 3 for k, v in CFGS.items()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_macs(model: VGG, height: int, width: int, fc_layers: int = 3) -> int:
    """Multiply-accumulates of one forward pass at ``height x width`` (dense form if larger).

    Pools and ReLUs are free; FC layers count as convolutions over the final map, so for the
    crop size this equals the FC form's cost. ``fc_layers``: how many of FC6-FC8 run (2: up to
    FC7, as for descriptors).
    """
    macs, h, w = 0, height, width
    for m in model.features:
        if isinstance(m, (nn.Conv2d, WinogradConv2d)):  # Winograd's: its direct-conv equivalent,
            kh, kw = m.weight.shape[2:]  # so GMAC/s stay comparable across modes
            macs += m.in_channels * m.out_channels * kh * kw * h * w
        elif isinstance(m, nn.MaxPool2d):
            h, w = h // 2, w // 2
    k = model.kernel
    h, w = h - k + 1, w - k + 1
    for i in (0, 3, 6)[:fc_layers]:
        lin = model.classifier[i]
        macs += lin.in_features * lin.out_features * h * w
    return macs


def table1() -> str:
    """Table 1 as text: one column per config, one row per layer slot."""
    cols = {}
    for name, spec in CFGS.items():
        rows, block = [[]], 0
        for item in spec:
            if item == "M":
                rows.append(["maxpool"])
                rows.append([])
                block += 1
            else:
                rows[-1].append("LRN" if item == "LRN" else f"conv{item}")
        cols[name] = [" ".join(r) for r in rows if r] + ["FC-4096", "FC-4096", "FC-1000", "soft-max"]
    widths = [max(len(name), *map(len, col)) + 2 for name, col in cols.items()]
    lines = ["".join(n.ljust(w) for n, w in zip(cols, widths, strict=True)).rstrip()]
    for row in zip(*cols.values(), strict=True):
        lines.append("".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def table2(num_classes: int = 1000, size: int = 224) -> list[dict]:
    """Weight layers, parameters and cost of every config (and its BN variant) at ``size``."""
    rows = []
    for name in CFGS:
        for bn in (False, True) if name != "A-LRN" else (False,):
            with torch.device("meta"):  # shapes only: no memory, no random init
                model = VGG(name + ("_bn" if bn else ""), num_classes=num_classes, crop_size=size)
            macs = conv_macs(model, size, size)
            rows.append(
                {
                    "config": model.arch,
                    "weight_layers": WEIGHT_LAYERS[name],
                    "params": count_params(model),
                    "gmacs": round(macs / 1e9, 3),
                    "gflops": round(2 * macs / 1e9, 3),
                }
            )
    return rows
