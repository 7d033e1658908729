"""Winograd F(4x4, 3x3) convolution: the same 3x3 conv with 2.25x fewer multiplications.

On CPUs without native bf16 the fp32 training step sits at the matmul limit (docs/BENCHMARKS.md),
so the only way to a faster step is fewer operations. Lavin & Gray's F(4x4, 3x3) computes each
4x4 output tile from a 6x6 input tile with 36 products per channel pair instead of 144. Written
with torch ops only (unfold, two transform matmuls, one batched matmul over channels), it
differentiates by autograd, so its backward passes are matmuls of the same reduced size: torch
has no Winograd backward of its own (NNPACK's Winograd is forward-only). The numbers differ from
direct convolution by fp32 rounding (relative error about 1e-5; tested), never by more.

Only where the channel matmul outweighs the memory-bound tile transforms can it pay: with 256 or
more input channels (VGG's stages 3-5), which ``winograd_convs`` swaps, keeping the state_dict
keys. Measured on a 2-core AVX2 EPYC (docs/BENCHMARKS.md): 1.3-1.9x on those layers alone on one
thread, but 1.02-1.05x on the whole training step on two, so it is a bench candidate and not
what ``verydeep train`` runs.

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
import functools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WinogradConv2d", "eligible", "winograd_conv3x3", "winograd_convs"]

# Lavin & Gray (2016), F(4x4, 3x3) with interpolation points 0, +-1, +-2, infinity
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # fmt: skip
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # fmt: skip
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


@functools.lru_cache(maxsize=16)
def _matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as single matrices (Kronecker products, built in float64 once):
    input 36x36 (B^T d B on a flattened 6x6 tile), output 16x36 (A^T m A), and G (6x3)."""
    bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
    k_in = torch.einsum("ai,bj->abij", bt, bt).reshape(36, 36)
    k_out = torch.einsum("pa,qb->pqab", at, at).reshape(16, 36)
    return tuple(m.to(dtype=dtype, device=device) for m in (k_in, k_out, g))  # type: ignore[return-value]


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for 3x3 kernels, stride 1, through F(4x4, 3x3)."""
    if x.dim() != 4 or weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"winograd_conv3x3 needs NCHW input and a (C_out, C_in, 3, 3) kernel, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")  # fmt: skip
    n, c, h, w = x.shape
    co = weight.shape[0]
    th, tw = -(-h // 4), -(-w // 4)  # output tiles per side; the last ones overhang, then cropped
    k_in, k_out, g = _matrices(x.dtype, x.device)
    # 6x6 input tiles at stride 4 (padding 1 left/top, enough right/bottom for the last tile)
    xp = F.pad(x, (1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
    tiles = F.unfold(xp, 6, stride=4).view(n, c, 36, th * tw)
    # layout (frequency, channel, tile) so that each frequency is one plain matmul over channels
    v = (k_in @ tiles.permute(2, 1, 0, 3).reshape(36, c * n * th * tw)).view(36, c, n * th * tw)
    u = torch.einsum("ai,ocij,bj->aboc", g, weight, g).reshape(36, co, c)
    m = torch.bmm(u, v).view(36, co * n * th * tw)
    y = (k_out @ m).view(4, 4, co, n, th, tw).permute(3, 2, 4, 0, 5, 1).reshape(n, co, 4 * th, 4 * tw)
    if 4 * th != h or 4 * tw != w:
        y = y[:, :, :h, :w]
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def eligible(conv: nn.Module, min_channels: int) -> bool:
    """A plain 3x3/1 conv with padding 1 and at least ``min_channels`` inputs."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels >= min_channels
    )


class WinogradConv2d(nn.Module):
    """A 3x3 conv layer computed by ``winograd_conv3x3``; parameters named as ``nn.Conv2d``'s."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return winograd_conv3x3(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), F(4x4, 3x3)"


def winograd_convs(model: nn.Module, min_channels: int = 256) -> nn.Module:
    """A copy of ``model`` whose eligible 3x3 convs run through Winograd (the state_dict keys and
    values are unchanged, so a checkpoint of either loads into the other)."""
    out = copy.deepcopy(model)
    for module in list(out.modules()):
        for child_name, child in list(module.named_children()):
            if eligible(child, min_channels):
                setattr(module, child_name, WinogradConv2d(child))
    return out
