"""timm ``features_only``-style access to a VGG: per-block maps and the dense FC6/FC7 maps.

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.models.extractor import FeatureExtractor
    >>> net = VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()
    >>> fx = FeatureExtractor(net, out_layers=(2, 4, "fc7"))
    >>> fx.channels(), fx.reductions()
    ([32, 64, 32], [8, 32, 32])
    >>> [tuple(m.shape) for m in fx(torch.zeros(1, 3, 64, 96))]
    [(1, 32, 8, 12), (1, 64, 2, 3), (1, 32, 2, 3)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import extract
from .vgg import VGG

LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7")
_NAMED = {"fc6": "relu6", "fc7": "relu7"}  # the Caffe names of what fc6/fc7 mean here


class FeatureExtractor(nn.Module):
    """Maps of chosen layers of a VGG, like timm's ``features_only`` (shares the model's weights).

    ``out_layers``: names from ``LAYERS`` or their indices (0 = pool1 ... 4 = pool5, 5 = fc6,
    6 = fc7). pool<k> is the output of block k (after its max-pool, = ``model.feature_maps``);
    fc6/fc7 are the dense (fully-convolutional) maps after ReLU. Stops at the last layer asked for.
    """

    def __init__(self, model: VGG, out_layers: Sequence[int | str] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        self.model = model
        names = [LAYERS[v] if isinstance(v, int) else v for v in out_layers]
        unknown = [n for n in names if n not in LAYERS]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; choose from {', '.join(LAYERS)}")
        self.out_layers = sorted(set(names), key=LAYERS.index)
        blocks, chans = [], None
        for m in model.features:
            chans = getattr(m, "out_channels", chans)  # Conv2d, or a Winograd copy's conv
            if isinstance(m, nn.MaxPool2d):
                blocks.append(chans)
        fc = model.classifier[0].out_features
        chs = [*blocks, fc, fc]
        self.feature_info = [
            {"module": n, "num_chs": chs[LAYERS.index(n)], "reduction": 2 ** min(LAYERS.index(n) + 1, 5)}
            for n in self.out_layers
        ]

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # the named-layer engine (layers.extract), in the net's own mode; fc6/fc7 after their ReLU
        names = [_NAMED.get(n, n) for n in self.out_layers]
        maps = extract(self.model, x, names, train_weights=True)
        return [maps[n] for n in names]
