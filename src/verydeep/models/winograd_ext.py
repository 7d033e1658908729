"""Winograd F(4x4, 3x3) on the CPU with fused tile transforms (C++, compiled on first use).

``models/winograd.py`` writes the transforms as torch ops; they then cost more than the channel
matmul they feed (experiments/bench_notes.md). Here the four transforms (input, output and their
adjoints) are single passes in ``winograd_kernels.cpp``, compiled once per machine by
``torch.utils.cpp_extension`` into ``~/.cache/torch_extensions/verydeep_winograd_<key>`` (about a
minute, with g++; the key hashes the source, flags and versions, so clones share a build), and
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
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path
from types import ModuleType

import torch

from .winograd_math import fused_applies, transformed_weight

__all__ = ["available", "fused_conv3x3", "kernels"]

_SOURCE = Path(__file__).with_name("winograd_kernels.cpp")
_NAME = "verydeep_winograd"


@functools.lru_cache(maxsize=1)
def kernels() -> ModuleType:
    """The compiled kernels (built on the first call on a machine, then loaded from the cache).
    Raises RuntimeError with the reason where they cannot be built."""
    from ..hardware import cpu_flags

    load = _quiet_cpp_extension().load

    # AVX2 + FMA where the CPU has them, not -march=native: the build cache may outlive the CPU
    avx2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= set(cpu_flags())
    flags = ["-O3", "-fopenmp"] + (["-mavx2", "-mfma"] if avx2 else [])
    if not _SOURCE.is_file():
        raise RuntimeError(f"Winograd kernels: {_SOURCE} is missing from the installed package")
    try:  # an unwritable cache directory, too, is one line and the torch-ops path
        name, source = _build_source(flags)
        if not any(source.parent.glob(f"{name}*.so")):
            print("verydeep: compiling the Winograd kernels (once per machine, a minute)", file=sys.stderr)
        return load(
            name=name,
            sources=[str(source)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(source.parent),
            verbose=bool(os.environ.get("VERYDEEP_VERBOSE_BUILD")),
        )
    except Exception as exc:  # no compiler, no ninja, a failed build: say which, in one line
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"Winograd kernels could not be built ({reason})") from exc


def _quiet_cpp_extension() -> ModuleType:
    """torch.utils.cpp_extension, imported without its CUDA_HOME warning: on a CPU-only machine
    with /usr/local/cuda it logs "No CUDA runtime is found" at import, into every command's
    output, though these kernels never touch CUDA."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _build_source(flags: list[str]) -> tuple[str, Path]:
    """The build's name and its own copy of the source, in a directory keyed by the source, the
    flags and torch's version. ninja rebuilds when a source is newer than its object, and every
    clone gives the file a new time; the copy keeps the time of its first build, so a fresh
    clone (or two checkouts side by side) loads the build that is there instead of recompiling."""
    text = _SOURCE.read_bytes()
    key = hashlib.sha256(text + " ".join([*flags, torch.__version__, sys.version]).encode()).hexdigest()
    name = f"{_NAME}_{key[:12]}"
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    source = root / name / _SOURCE.name
    if not source.is_file():  # the name hashes the text: a copy there is this text
        source.parent.mkdir(parents=True, exist_ok=True)
        tmp = source.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(text)
        tmp.replace(source)  # atomic: a second process building beside this one sees all or nothing
    return name, source


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

    if not fused_applies(x, weight):
        raise ValueError(
            f"fused Winograd runs fp32/fp64 on the CPU outside autocast, got {x.dtype} on {x.device}"
        )
    return _Fused.apply(x, transformed_weight(weight), bias, relu)
