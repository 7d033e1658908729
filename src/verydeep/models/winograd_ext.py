"""Winograd F(4x4, 3x3) on the CPU with fused tile transforms (C++, compiled on first use).

``models/winograd.py`` writes the transforms as torch ops; they then cost more than the channel
matmul they feed (docs/BENCHMARKS.md). Here the four transforms (input, output and their
adjoints) are single passes in ``winograd_kernels.cpp``, compiled once per machine by
``torch.utils.cpp_extension`` into ``~/.cache/torch_extensions`` (about a minute, with g++), and
the backward is written out: grad input = adjoint input transform of U^T dM, grad U = dM V^T.
Without a compiler ``available()`` is False and ``winograd.py`` keeps its torch-ops path.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> x, w = torch.randn(2, 8, 14, 14), torch.randn(16, 8, 3, 3)
    >>> y = fused_conv3x3(x, w) if available() else F.conv2d(x, w, padding=1)
    >>> bool(torch.allclose(y, F.conv2d(x, w, padding=1), atol=1e-4))
    True
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["available", "fused_conv3x3", "kernels"]

_SOURCE = Path(__file__).with_name("winograd_kernels.cpp")
_NAME = "verydeep_winograd"


@functools.lru_cache(maxsize=1)
def kernels() -> ModuleType:
    """The compiled kernels (built on the first call on a machine, then loaded from the cache).
    Raises RuntimeError with the reason where they cannot be built."""
    from torch.utils.cpp_extension import load

    from ..hardware import cpu_flags

    # AVX2 + FMA where the CPU has them, not -march=native: the build cache may outlive the CPU
    avx2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= set(cpu_flags())
    flags = ["-O3", "-fopenmp"] + (["-mavx2", "-mfma"] if avx2 else [])
    if not _SOURCE.is_file():
        raise RuntimeError(f"Winograd kernels: {_SOURCE} is missing from the installed package")
    if not _built():
        print("verydeep: compiling the Winograd kernels (once per machine, about a minute)", file=sys.stderr)
    try:
        return load(
            name=_NAME,
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            verbose=bool(os.environ.get("VERYDEEP_VERBOSE_BUILD")),
        )
    except Exception as exc:  # no compiler, no ninja, a failed build: say which, in one line
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"Winograd kernels could not be built ({reason})") from exc


def _built() -> bool:
    """Whether torch's extension cache already holds a build (then loading takes a second)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(_NAME, verbose=False)).glob(f"{_NAME}*.so"))
    except Exception:  # a private helper of torch's: if it moved, only the message is lost
        return False


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the fused kernels build and load here (tried once per process)."""
    try:
        kernels()
    except RuntimeError as exc:
        print(f"verydeep: {exc}; the torch-ops Winograd is used", file=sys.stderr)
        return False
    return True


class _Fused(torch.autograd.Function):
    """y = A^T [(B^T x B) U^T] A + bias (then max(0, .) with ``relu``), with U the transformed
    weights (36, K, C). The kernels work on channels_last; y is channels_last, and the input's
    gradient comes back in the input's own memory format (an NCHW block before a Winograd one
    would otherwise convert its gradients back itself, at a larger size)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> torch.Tensor:
        ext = kernels()
        n, _, h, w = x.shape
        ctx.nchw = not x.is_contiguous(memory_format=torch.channels_last)
        v = ext.input_transform(x.contiguous(memory_format=torch.channels_last))  # (36, tiles, C)
        m = torch.bmm(v, u.transpose(1, 2))  # (36, tiles, K)
        y = ext.output_transform(m, None if bias is None else bias.contiguous(), n, h, w, relu)
        ctx.save_for_backward(v, u, y if relu else None)
        ctx.geometry, ctx.has_bias = (n, h, w), bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, u, y = ctx.saved_tensors
        ext = kernels()
        dm = ext.output_adjoint(gy.contiguous(memory_format=torch.channels_last), y)  # (36, tiles, K)
        gx = gu = gb = None
        if ctx.needs_input_grad[0]:
            gx = ext.input_adjoint(torch.bmm(dm, u), *ctx.geometry)
            gx = gx.contiguous() if ctx.nchw else gx
        if ctx.needs_input_grad[1]:
            gu = torch.bmm(dm.transpose(1, 2), v)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # column 1 of A^T is all ones, so frequency (1, 1) of A g A^T sums each (masked) tile
            gb = dm[7].sum(0)
        return gx, gu, gb, None


def fused_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` (then ``F.relu`` with ``relu``) for fp32/fp64 on
    the CPU, through the fused kernels; the result is channels_last. The weight transform stays
    in torch ops, so autograd carries it to ``weight``."""
    from .winograd import fused_applies, transformed_weight  # one of each for both paths

    if not fused_applies(x, weight):
        raise ValueError(
            f"fused Winograd runs fp32/fp64 on the CPU outside autocast, got {x.dtype} on {x.device}"
        )
    return _Fused.apply(x, transformed_weight(weight), bias, relu)
