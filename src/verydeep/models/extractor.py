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
import torch.nn.functional as F
from torch import nn

from .vgg import VGG

LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7")


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
            chans = m.out_channels if isinstance(m, nn.Conv2d) else chans
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
        maps, block, want, last = {}, 0, set(self.out_layers), self.out_layers[-1]
        for layer in self.model.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                block += 1
                if f"pool{block}" in want:
                    maps[f"pool{block}"] = x
                if last == f"pool{block}":
                    break
        if last in ("fc6", "fc7"):
            for j, name in enumerate(("fc6", "fc7")):
                x = self.model.dense_head(x, upto=1) if j == 0 else self._fc7(x)
                maps[name] = x
        return [maps[n] for n in self.out_layers]

    def _fc7(self, fc6: torch.Tensor) -> torch.Tensor:
        w, b = self.model.fc_as_conv()[1]
        c = self.model.classifier
        return c[5](c[4](F.conv2d(fc6, w, b)))
