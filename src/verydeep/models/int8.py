"""int8 inference on x86 CPUs: post-training static quantisation of every conv and FC layer.

Each conv (with its BatchNorm folded in) and its ReLU are fused, as are FC6/FC7 and their ReLUs;
weights are symmetric int8 per output channel, activations uint8 per tensor, with ranges from
histograms of calibration images (7-bit, ``reduce_range``, so that AVX2's 16-bit pair sums
cannot saturate). torch's ``x86`` quantised engine runs the result: fbgemm and oneDNN int8
kernels, VNNI or AMX where the CPU has them, AVX2 otherwise. LRN has no int8 kernel and runs in
fp32 between a dequantise and a quantise. Inference only: dropout is gone.

Why torch's eager quantisation and not PT2E (torch.export + torchao's x86 inductor quantiser +
torch.compile): both reached the same speed on VGG-16 (docs/BENCHMARKS.md), but the compiled
graph is specialised to input-size ranges and recompiled (about 40 s for VGG-16 on 2 cores) for
new ones, and dense evaluation meets a new image size with nearly every photograph.

The result answers the calls evaluation and feature extraction make of a ``VGG`` (``features``,
``dense_head``, ``forward``, ``crop_size``...) at any batch and image size, so dense, multi-crop
and descriptor code run on it unchanged. Precision is reported, never assumed: ``verydeep bench``
measures agreement with fp32 on photographs (docs/BENCHMARKS.md).

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.models.int8 import quantize_int8
    >>> net = VGG("A", num_classes=4, width_mult=0.125, fc_width=16, crop_size=32).eval()
    >>> q = quantize_int8(net, torch.randn(4, 3, 32, 32))
    >>> q(torch.randn(2, 3, 32, 32)).shape, q.dense_forward(torch.randn(1, 3, 64, 96)).shape
    (torch.Size([2, 4]), torch.Size([1, 4, 2, 3]))
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

from .vgg import VGG


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization warns that it is in maintenance mode at every call; it still is
    the pinned torch's int8 path that runs at any input size without a compile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Float(nn.Module):
    """A layer without an int8 kernel (LRN): dequantise, run it in fp32, quantise again."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.dequant, self.layer, self.quant = tq.DeQuantStub(), layer, tq.QuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(self.layer(self.dequant(x)))


def _fusable(features: nn.Sequential) -> tuple[nn.Sequential, list[list[str]]]:
    """``features`` with non-int8 layers wrapped, and the conv(+BN)+ReLU groups to fuse."""
    layers, groups = [], []
    for i, m in enumerate(features):
        layers.append(m if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)) else _Float(m))
        if isinstance(m, nn.Conv2d):
            bn = i + 1 < len(features) and isinstance(features[i + 1], nn.BatchNorm2d)
            groups.append([str(j) for j in range(i, i + (3 if bn else 2))])
    return nn.Sequential(*layers), groups


def _quantize(body: nn.Module, groups: list[list[str]], calib: list[torch.Tensor]) -> nn.Module:
    """Fuse ``groups`` of ``body``, wrap it in quantise/dequantise, observe ``calib``, convert."""
    with _quiet():
        fused = tq.fuse_modules(body.eval(), groups) if groups else body.eval()
        net = nn.Sequential(tq.QuantStub(), fused, tq.DeQuantStub()).eval()
        net.qconfig = tq.get_default_qconfig("x86")
        observed = tq.prepare(net)
        with torch.no_grad():
            for x in calib:
                observed(x)
        return _Quiet(tq.convert(observed))


class _Quiet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _quiet():
            return self.net(x)


class Int8VGG(nn.Module):
    """A quantised ``VGG`` for inference: int8 ``features`` and FC6, FC7, FC8."""

    def __init__(self, model: VGG, features: nn.Module, fcs: list[nn.Module]) -> None:
        super().__init__()
        for name in ("build_kwargs", "letter", "batch_norm", "arch", "kernel", "crop_size", "num_classes"):
            setattr(self, name, getattr(model, name))
        self.in_channels = model.in_channels
        self.features = features
        self.fcs = nn.ModuleList(fcs)
        self.register_buffer("anchor", torch.zeros(()))  # where the net lives, for callers that ask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of ``crop_size`` crops (the FC form)."""
        f = self.features(x)
        if f.shape[-2:] != (self.kernel, self.kernel):
            got = tuple(x.shape[-2:])
            raise ValueError(f"FC form expects {self.crop_size}x{self.crop_size} input, got {got}")
        return self._fc(torch.flatten(f, 1), 3)

    def _fc(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        for fc in self.fcs[:upto]:
            x = fc(x)
        return x

    def dense_head(self, fmap: torch.Tensor, upto: int = 3) -> torch.Tensor:
        """FC6..FC<5+upto> on every k x k window: the same windows as ``VGG.dense_head``."""
        if min(fmap.shape[-2:]) < self.kernel:
            raise ValueError(f"image too small for dense evaluation: each side must be >= {self.crop_size}")
        n, _, h, w = fmap.shape
        k = self.kernel
        rows = F.unfold(fmap, k).transpose(1, 2).reshape(-1, fmap.shape[1] * k * k)
        out = self._fc(rows, upto)
        return out.view(n, h - k + 1, w - k + 1, -1).permute(0, 3, 1, 2)

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_head(self.features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def quantize_int8(model: VGG, calibration: torch.Tensor, *, chunk: int = 16) -> Int8VGG:
    """int8 copy of ``model`` (left unchanged), calibrated on ``calibration``: normalised
    crop-size inputs (N, C, crop, crop), a few dozen real photographs. CPU only."""
    if calibration.device.type != "cpu" or next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 inference runs on the CPU (x86 int8 kernels); use bf16 on a GPU")
    if calibration.dim() != 4 or calibration.shape[-1] != model.crop_size or len(calibration) < 1:
        raise ValueError(f"calibration must be crops of {model.crop_size} px, got {tuple(calibration.shape)}")
    net = copy.deepcopy(model).float().eval()
    batches = list(calibration.float().contiguous().split(chunk))
    body, groups = _fusable(net.features)
    features = _quantize(body, groups, batches)
    with torch.no_grad():
        acts = [torch.flatten(net.features(x), 1) for x in batches]
    c = net.classifier
    fcs = []
    for block in (nn.Sequential(c[0], nn.ReLU()), nn.Sequential(c[3], nn.ReLU()), nn.Sequential(c[6])):
        with torch.no_grad():
            nxt = [block(a) for a in acts]  # before fusing: the float block's outputs feed the next
        fcs.append(_quantize(block, [["0", "1"]] if len(block) == 2 else [], acts))
        acts = nxt
    return Int8VGG(net, features, fcs)
