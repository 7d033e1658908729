"""Winograd F(4x4, 3x3) convolution: the same 3x3 conv with 4x fewer multiplications.

On CPUs without native bf16 the fp32 training step sits at the matmul limit (experiments/bench_notes.md),
so the only way to a faster step is fewer operations. Lavin & Gray's F(4x4, 3x3) computes each
4x4 output tile from a 6x6 input tile with 36 products per channel pair instead of 144; what is
left is one batched matmul over channels per layer, between tile transforms. Two versions of
the transforms: ``winograd_conv3x3`` here writes them as torch ops (unfold, two dense transform
matmuls; any device and dtype, differentiated by autograd), and ``winograd_ext`` as fused C++
passes over channels_last memory with the backward written out, which ``WinogradConv2d(fused=
True)`` uses where it applies (fp32 on the CPU). torch has no Winograd backward of its own
(NNPACK's is forward-only). The numbers differ from direct convolution by fp32 rounding
(relative error about 1e-5; tested), never by more.

Only where the channel matmul outweighs the memory-bound transforms can it pay. With the torch
ops that is 256 or more input channels (1.02-1.05x on the VGG-16 training step of a 2-core AVX2
EPYC); with the fused transforms every conv with 64+ inputs and 128+ outputs (VGG's stages 2-5),
which is what ``verydeep train`` runs on CPUs without native bf16 (``train.winograd = "auto"``;
docs/BENCHMARKS.md has the step's speed). ``winograd_convs`` swaps them, keeping the state_dict.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> x, w = torch.randn(2, 8, 14, 14), torch.randn(16, 8, 3, 3)
    >>> y = winograd_conv3x3(x, w)
    >>> bool(torch.allclose(y, F.conv2d(x, w, padding=1), atol=1e-4))
    True
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .winograd_math import _matrices, fused_applies, transformed_weight

__all__ = [
    "WinogradConv2d",
    "eligible",
    "fused_applies",
    "transformed_weight",
    "winograd_conv3x3",
    "winograd_convs",
]


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for 3x3 kernels, stride 1, through F(4x4, 3x3)."""
    if x.dim() != 4 or weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"winograd_conv3x3 needs NCHW input and a (C_out, C_in, 3, 3) kernel, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")  # fmt: skip
    n, c, h, w = x.shape
    co = weight.shape[0]
    th, tw = -(-h // 4), -(-w // 4)  # output tiles per side; the last ones overhang, then cropped
    k_in, k_out, _ = _matrices(x.dtype, x.device)
    # 6x6 input tiles at stride 4 (padding 1 left/top, enough right/bottom for the last tile)
    xp = F.pad(x, (1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
    tiles = F.unfold(xp, 6, stride=4).view(n, c, 36, th * tw)
    # layout (frequency, channel, tile) so that each frequency is one plain matmul over channels
    v = (k_in @ tiles.permute(2, 1, 0, 3).reshape(36, c * n * th * tw)).view(36, c, n * th * tw)
    m = torch.bmm(transformed_weight(weight), v).view(36, co * n * th * tw)
    y = (k_out @ m).view(4, 4, co, n, th, tw).permute(3, 2, 4, 0, 5, 1).reshape(n, co, 4 * th, 4 * tw)
    if 4 * th != h or 4 * tw != w:
        y = y[:, :, :h, :w]
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def eligible(conv: nn.Module, min_channels: int, min_out: int = 1) -> bool:
    """A plain 3x3/1 conv with padding 1, at least ``min_channels`` inputs and ``min_out`` outputs."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels >= min_channels
        and conv.out_channels >= min_out
    )


class WinogradConv2d(nn.Module):
    """A 3x3 conv layer computed by Winograd; parameters named as ``nn.Conv2d``'s. ``fused``: the
    C++ transforms of ``winograd_ext`` where they apply (fp32/fp64 on the CPU, outside autocast),
    else ``winograd_conv3x3``'s torch ops. ``relu``: the ReLU that follows is applied here (in
    the output transform, and its mask in the gradient's), and ``winograd_convs`` drops it."""

    def __init__(self, conv: nn.Conv2d, fused: bool = False, relu: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.fused, self.relu = fused, relu
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and fused_applies(x, self.weight):
            from .winograd_ext import fused_conv3x3  # compiled on first use

            return fused_conv3x3(x, self.weight, self.bias, relu=self.relu)
        y = winograd_conv3x3(x, self.weight, self.bias)
        return F.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        kind = "fused" if self.fused else "torch ops"
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), F(4x4, 3x3), {kind}" + (
            ", ReLU" if self.relu else ""
        )


def winograd_convs(
    model: nn.Module,
    min_channels: int | None = None,
    min_out: int | None = None,
    fused: bool | None = None,
    memo: dict | None = None,
) -> nn.Module:
    """A copy of ``model`` whose eligible 3x3 convs run through Winograd (the state_dict keys and
    values are unchanged, so a checkpoint of either loads into the other).

    ``fused=None``: the C++ transforms if they build here (``winograd_ext.available()``; tried
    only if some conv qualifies). ``min_channels`` / ``min_out`` (inputs / outputs): by default
    64 / 128 with them (VGG-16's first block, 64 channels at full resolution, is all transform
    traffic and lost), 256 / 1 with the torch ops (their transforms cost more than less deep
    layers save). ``memo``: ``copy.deepcopy``'s, e.g. {id(p): p} to share tensors with ``model``."""

    def limits(fused_now: bool) -> tuple[int, int]:
        lo_in = min_channels if min_channels is not None else (64 if fused_now else 256)
        return lo_in, min_out if min_out is not None else (128 if fused_now else 1)

    if fused is None:
        if not any(eligible(m, *limits(True)) for m in model.modules()):
            return copy.deepcopy(model, dict(memo or {}))  # nothing to swap: no kernels to build
        from .winograd_ext import available

        fused = available()
    lo_in, lo_out = limits(fused)
    out = copy.deepcopy(model, dict(memo or {}))
    for module in list(out.modules()):
        children = list(module.named_children())
        for i, (child_name, child) in enumerate(children):
            if not eligible(child, lo_in, lo_out):
                continue
            # a ReLU right after it in a Sequential joins it (its place keeps an Identity, so the
            # state_dict's indices do not move)
            relu = isinstance(module, nn.Sequential) and i + 1 < len(children)
            relu = relu and type(children[i + 1][1]) is nn.ReLU
            setattr(module, child_name, WinogradConv2d(child, fused=fused, relu=relu))
            if relu:
                setattr(module, children[i + 1][0], nn.Identity())
    return out
