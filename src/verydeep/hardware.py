"""What this machine's arithmetic can do, read once and shared by train, eval, features and bench.

bf16 is only worth choosing where it is native: CUDA GPUs that support it, and CPUs with
AVX512-BF16 or AMX. On an AVX2-only CPU torch emulates bf16, about 7x slower than fp32, so
``precision="auto"`` never picks it there.

Example:
    >>> import torch
    >>> from verydeep.hardware import resolve_precision
    >>> resolve_precision("fp32", torch.device("cpu")) is None
    True
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_class() -> str:
    """The hardware class benchmarks are reported under: amx, avx512_bf16, avx512, avx2 or other."""
    flags = cpu_flags()
    for name, needs in (
        ("amx", "amx_bf16"),
        ("avx512_bf16", "avx512_bf16"),
        ("avx512", "avx512f"),
        ("avx2", "avx2"),
    ):
        if needs in flags:
            return name
    return "other"


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls run natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """``fp32`` -> None, ``bf16`` -> bf16 (asked for, so given), ``auto`` -> bf16 only if native."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if native_bf16(device) else None
