"""The VGG family of Simonyan & Zisserman (2015), Table 1, as data plus one builder.

Layer specs use the paper's own notation: ``"3-64"`` is conv3-64, ``"1-256"`` is conv1-256,
``"M"`` is a 2x2/2 max-pool and ``"LRN"`` is local response normalisation. The module layout and
state_dict keys equal torchvision's (``features.<i>``, ``classifier.<0|3|6>``), so torchvision
weights load unchanged. The classifier is kept as Linear layers; the dense (fully-convolutional)
form of Section 3.2 reuses the same tensors as conv kernels through views, so the two forms can
never drift apart.

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("D", num_classes=10, width_mult=0.125, fc_width=64, crop_size=32).eval()
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> net.dense_forward(torch.zeros(1, 3, 96, 64)).shape  # class score map
    torch.Size([1, 10, 3, 2])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ALIASES, CFGS, LRN_PARAMS, conv_names, final_map_size, parse_arch

__all__ = [
    "ALIASES",
    "CFGS",
    "LRN",
    "LRN_PARAMS",
    "VGG",
    "conv_names",
    "final_map_size",
    "make_layers",
    "parse_arch",
]


class LRN(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` with the same numbers, computed faster on 4-D input.

    The sum of squares over each ``size``-channel window is a 1x1 convolution with a banded 0/1
    kernel, one matmul over the channels. torch's version goes through ``avg_pool3d`` on a 5-D
    view, which on CPU made net A-LRN's single LRN cost about as much as all of net A.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        c = torch.arange(x.shape[1], device=x.device)
        offset = c[None, :] - c[:, None]  # input channel minus output channel
        band = (offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2)  # torch's padding
        window_sum = F.conv2d(x * x, band.to(x.dtype)[:, :, None, None])
        return x / (window_sum * (self.alpha / self.size) + self.k).pow(self.beta)


def make_layers(
    letter: str, in_channels: int = 3, width_mult: float = 1.0, batch_norm: bool = False
) -> nn.Sequential:
    """Build ``features`` with torchvision's indexing: conv, [bn], relu per conv item."""
    layers: list[nn.Module] = []
    c = in_channels
    for item in CFGS[letter]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "LRN":
            p = LRN_PARAMS
            layers.append(LRN(p["size"], p["alpha"] * p["size"], p["beta"], p["k"]))
        else:
            k, width = (int(v) for v in item.split("-"))
            out = max(1, round(width * width_mult))
            layers.append(nn.Conv2d(c, out, kernel_size=k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """One of the paper's nets; FC form for fixed-size crops, dense form for whole images.

    ``crop_size`` fixes FC6's input: its kernel is the final feature-map size at that crop
    (7 for 224). There is deliberately no adaptive pooling: a wrong input size is an error in
    the FC form, and the dense form is the paper's way to run on other sizes.
    """

    def __init__(
        self,
        arch: str = "D",
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        fc_width: int = 4096,
        crop_size: int = 224,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        # everything needed to rebuild this net; stored in every checkpoint
        self.build_kwargs = {
            "arch": arch,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "width_mult": width_mult,
            "fc_width": fc_width,
            "crop_size": crop_size,
            "dropout": dropout,
        }
        self.letter, self.batch_norm = parse_arch(arch)
        self.arch = self.letter + ("_bn" if self.batch_norm else "")
        self.kernel = final_map_size(crop_size)
        if self.kernel < 1:
            raise ValueError(f"crop_size {crop_size} is too small: five 2x2 pools need at least 32")
        self.crop_size, self.num_classes, self.in_channels = crop_size, num_classes, in_channels
        self.features = make_layers(self.letter, in_channels, width_mult, self.batch_norm)
        c5 = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.classifier = nn.Sequential(
            nn.Linear(c5 * self.kernel * self.kernel, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc_width, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc_width, num_classes),
        )

    # --- FC form -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) for crops of ``crop_size``; use ``dense_forward`` otherwise."""
        f = self.features(x)
        if f.shape[-2:] != (self.kernel, self.kernel):
            raise ValueError(
                f"FC form expects {self.crop_size}x{self.crop_size} input (feature map "
                f"{self.kernel}x{self.kernel}), got {tuple(x.shape[-2:])}; use dense_forward"
            )
        return self.classifier(torch.flatten(f, 1))

    # --- dense (fully-convolutional) form, Section 3.2 --------------------------------------
    def fc_as_conv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """FC6/FC7/FC8 weights viewed as conv kernels (k x k, 1x1, 1x1); no copies."""
        out = []
        for i in (0, 3, 6):
            lin = self.classifier[i]
            k = self.kernel if i == 0 else 1
            w = lin.weight.view(lin.out_features, lin.in_features // (k * k), k, k)
            out.append((w, lin.bias))
        return out

    def dense_head(self, fmap: torch.Tensor, upto: int = 3) -> torch.Tensor:
        """Apply FC6..FC<5+upto> as convolutions to a feature map of any size >= kernel.

        ``upto=3`` gives the class score map, ``upto=2`` the FC7 (penultimate) map after ReLU.
        Computed as matmuls over the unfolded k x k windows (the same sums as conv2d with the
        ``fc_as_conv`` kernels): the Linear weights are used as stored, where a 7x7 conv with
        4096 outputs makes oneDNN re-lay-out FC6's 102 M weights on every call (2x slower).
        """
        if min(fmap.shape[-2:]) < self.kernel:
            need = self.crop_size
            raise ValueError(f"image too small for dense evaluation: each side must be >= {need}")
        n, _, h, w = fmap.shape
        k = self.kernel
        x = F.unfold(fmap, k)  # (N, C*k*k, L): (c, i, j) order, as torch.flatten gives FC6
        for j, i in enumerate((0, 3, 6)[:upto]):
            lin = self.classifier[i]
            x = torch.matmul(lin.weight, x) + lin.bias[:, None]
            if j < 2:  # ReLU and dropout modules of the classifier, so train/eval modes agree
                x = self.classifier[i + 2](self.classifier[i + 1](x))
        return x.view(n, x.shape[1], h - k + 1, w - k + 1)

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class score map (N, classes, h, w) of a whole image of any size >= crop_size."""
        return self.dense_head(self.features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last conv block (after pool5)."""
        return self.features(x)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block feature maps (after each max-pool), like timm's ``features_only``."""
        maps = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                maps.append(x)
        return maps

    def conv_layers(self) -> dict[str, nn.Conv2d]:
        """Conv layers by Caffe name (conv1_1 ... conv5_4)."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        return dict(zip(conv_names(self.letter), convs, strict=True))
