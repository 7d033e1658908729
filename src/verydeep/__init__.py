"""verydeep: Simonyan & Zisserman's Very Deep ConvNets, the whole system.

Names are imported on first use, so that ``verydeep --help`` and the config answer without
importing torch.

Example (``verydeep.load(path)`` gives a checkpoint's net, transform and class names):
    >>> import verydeep
    >>> net = verydeep.VGG("vgg16", num_classes=10, width_mult=0.125, fc_width=64, crop_size=32)
    >>> net.arch
    'D'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VGG": "verydeep.models.vgg",
    "CFGS": "verydeep.models.arch",
    "parse_arch": "verydeep.models.arch",
    "load": "verydeep.api",
    "extract": "verydeep.models.layers",
    "layer_names": "verydeep.models.layers",
    "layer_info": "verydeep.models.layers",
    "Backbone": "verydeep.backbone",
    "PerceptualLoss": "verydeep.losses",
    "StyleLoss": "verydeep.losses",
    "LPIPSDistance": "verydeep.losses",
    "TotalVariation": "verydeep.losses",
}
__all__ = [
    "CFGS", "VGG", "Backbone", "LPIPSDistance", "PerceptualLoss", "StyleLoss", "TotalVariation",
    "__version__", "extract", "layer_info", "layer_names", "load", "parse_arch",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verydeep' has no attribute {name!r}")
