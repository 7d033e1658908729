"""int8 inference on x86 CPUs: post-training static quantisation of the convs and FC layers.

BatchNorm is folded into its conv, the conv chain is equalised across layers (``equalize``),
and each conv from conv1_2 on is fused with its ReLU, as are FC6 and FC7; weights are symmetric
int8 per output channel, activations uint8 per tensor, with ranges from histograms of
calibration images (7-bit, ``reduce_range``, so that AVX2's 16-bit pair sums cannot saturate).
conv1_1 and FC8 stay fp32 (0.6% of VGG-16's operations): on an Imagewoof net, quantising them
cost the most top-1 agreement with fp32 (experiments/bench_notes.md). torch's ``x86`` quantised engine
runs the result: fbgemm and oneDNN int8 kernels, VNNI or AMX where the CPU has them, AVX2
otherwise. LRN has no int8 kernel and runs in fp32 between a dequantise and a quantise.
Inference only: dropout is gone.

Why torch's eager quantisation and not PT2E (torch.export + torchao's x86 inductor quantiser +
torch.compile): both reached the same speed on VGG-16 (experiments/bench_notes.md), but the compiled
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
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def _fold_bn(features: nn.Sequential) -> nn.Sequential:
    """BatchNorm folded into the conv before it (eval statistics): conv, ReLU, pool and LRN remain."""
    layers = list(features)
    for i, m in enumerate(layers):
        if isinstance(m, nn.BatchNorm2d) and i and isinstance(layers[i - 1], nn.Conv2d):
            layers[i - 1], layers[i] = fuse_conv_bn_eval(layers[i - 1], m), nn.Identity()
    return nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)])


@torch.no_grad()
def equalize(features: nn.Sequential, rounds: int = 4) -> None:
    """Cross-layer equalisation (Nagel et al., 2019), in place: for each conv followed by another
    with only ReLU and max-pooling between (both commute with a positive per-channel scale),
    scale output channel c of the first by 1/s and input channel c of the second by s, with
    s = sqrt(r1 / r2) from the two weight ranges. The net computes the same function, but every
    channel's range is closer to the tensor's, which per-tensor activation ranges need."""
    convs, pairs = [], []
    for m in features:
        if isinstance(m, nn.Conv2d):
            if convs and convs[-1] is not None:
                pairs.append((convs[-1], m))
            convs.append(m)
        elif not isinstance(m, (nn.ReLU, nn.MaxPool2d)):
            convs.append(None)  # LRN mixes channels: no pair across it
    for _ in range(rounds):
        for a, b in pairs:
            r1 = a.weight.abs().amax(dim=(1, 2, 3))
            r2 = b.weight.abs().amax(dim=(0, 2, 3))
            s = (r1 / r2.clamp_min(1e-12)).sqrt().clamp(1e-3, 1e3)
            a.weight.div_(s[:, None, None, None])
            if a.bias is not None:
                a.bias.div_(s)
            b.weight.mul_(s[None, :, None, None])


def _split(features: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential, list[list[str]]]:
    """(fp32 head: conv1_1 and its ReLU, int8 body with non-int8 layers wrapped, conv+ReLU
    groups of the body to fuse). conv1_1 stays fp32: quantising the image itself to 7 bits was
    the largest single loss measured, and the layer costs 0.6% of VGG-16's operations."""
    head, rest = nn.Sequential(*features[:2]), list(features[2:])
    layers, groups = [], []
    for i, m in enumerate(rest):
        layers.append(m if isinstance(m, (nn.Conv2d, nn.ReLU, nn.MaxPool2d)) else _Float(m))
        if isinstance(m, nn.Conv2d):
            groups.append([str(i), str(i + 1)])
    return head, nn.Sequential(*layers), groups


def _quantize(
    body: nn.Module, groups: list[list[str]], calib: list[torch.Tensor], head: nn.Module | None = None
) -> nn.Module:
    """Fuse ``groups`` of ``body``, wrap it in quantise/dequantise (after the fp32 ``head``),
    observe ``calib``, convert."""
    with _quiet():
        fused = tq.fuse_modules(body.eval(), groups) if groups else body.eval()
        net = nn.Sequential(tq.QuantStub(), fused, tq.DeQuantStub())
        net.qconfig = tq.get_default_qconfig("x86")
        net = nn.Sequential(head, net).eval() if head is not None else net.eval()
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
    """A quantised ``VGG`` for inference: ``features`` (int8 from conv1_2 on), FC6, FC7 (int8), FC8."""

    def __init__(self, model: VGG, features: nn.Module, fcs: list[nn.Module]) -> None:
        super().__init__()
        for name in ("build_kwargs", "letter", "batch_norm", "arch", "kernel", "crop_size", "num_classes"):
            setattr(self, name, getattr(model, name))
        self.in_channels = model.in_channels
        self.features = features
        self.fcs = nn.ModuleList(fcs)
        self.register_buffer("anchor", torch.zeros(()))  # where the net lives, for callers that ask
        # precision ``int8-checked``: the fp32 net that recomputes near-tied posteriors
        # (``evaluation.core.recheck``), the margin that counts as one, and how many rows of
        # posteriors were checked and recomputed
        self.exact: VGG | None = None
        self.check_margin = 0.0
        self.checked = self.rechecked = 0

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
    features = _fold_bn(net.features)
    equalize(features)
    head, body, groups = _split(features)
    q_features = _quantize(body, groups, batches, head=head)
    with torch.no_grad():
        acts = [torch.flatten(features(x), 1) for x in batches]
    c = net.classifier
    fcs: list[nn.Module] = []
    for block in (nn.Sequential(c[0], nn.ReLU()), nn.Sequential(c[3], nn.ReLU())):
        with torch.no_grad():
            nxt = [block(a) for a in acts]  # before fusing: the float block's outputs feed the next
        fcs.append(_quantize(block, [["0", "1"]], acts))
        acts = nxt
    fcs.append(c[6])  # FC8 in fp32: its int8 rounding moved near-tied top-1s most (4M MACs)
    return Int8VGG(net, q_features, fcs)
