"""The Winograd F(4x4, 3x3) transforms both convolution paths share: the matrices, the weight
transform, and where the fused C++ kernels apply (``winograd`` and ``winograd_ext`` import this
leaf; neither imports the other's internals).

Example:
    >>> import torch
    >>> from verydeep.models.winograd_math import transformed_weight
    >>> transformed_weight(torch.randn(16, 8, 3, 3)).shape  # 36 tile positions x C_out x C_in
    torch.Size([36, 16, 8])
"""

from __future__ import annotations

import functools

import torch

# Lavin & Gray (2016), F(4x4, 3x3) with interpolation points 0, +-1, +-2, infinity
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # fmt: skip
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # fmt: skip
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


@functools.lru_cache(maxsize=16)
def _matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as single matrices (Kronecker products, built in float64 once): input
    36x36 (B^T d B on a flattened 6x6 tile), output 16x36 (A^T m A), weights 36x9 (G w G^T)."""
    # built outside inference mode even when first asked for inside it (predict, eval): a cached
    # inference tensor could never again take part in a backward pass (training, the bench)
    with torch.inference_mode(False):
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        k_in = torch.einsum("ai,bj->abij", bt, bt).reshape(36, 36)
        k_out = torch.einsum("pa,qb->pqab", at, at).reshape(16, 36)
        k_w = torch.einsum("ai,bj->abij", g, g).reshape(36, 9)
        return tuple(m.to(dtype=dtype, device=device) for m in (k_in, k_out, k_w))  # type: ignore[return-value]


def transformed_weight(weight: torch.Tensor) -> torch.Tensor:
    """U = G w G^T of each (C_out, C_in) 3x3 kernel, laid out (36, C_out, C_in) for the bmm: one
    matmul with G (x) G, whose output is already in that layout (an einsum permutes a copy)."""
    co, c = weight.shape[:2]
    return (_matrices(weight.dtype, weight.device)[2] @ weight.reshape(co * c, 9).t()).view(36, co, c)


def fused_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``winograd_ext``'s kernels take this input: fp32/fp64 on the CPU, outside autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
    )
