"""What this machine's arithmetic can do, read once and shared by train, eval, features and bench.

bf16 is only worth choosing where it is native: CUDA GPUs that support it, and CPUs with
AVX512-BF16 or AMX. On an AVX2-only CPU torch emulates bf16, about 7x slower than fp32, so
``precision="auto"`` never picks it there (``numerics.py`` makes the choice).

Example:
    >>> from verydeep.hardware import parse_cpu_flags
    >>> sorted(parse_cpu_flags("flags : fpu avx2 amx_bf16"))
    ['amx_bf16', 'avx2', 'fpu']
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

# The environment that makes torch's CPU kernels (oneDNN, MKL, fbgemm, ATen's own) stop at AVX2:
# how `verydeep bench --isa avx2` measures an AVX2-only machine's modes on a bigger CPU. Each
# library reads its variable once, when torch loads, so it must be set before the process starts.
AVX2_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
_ABOVE_AVX2 = ("avx512", "amx", "avx_vnni", "avx10")


def isa_capped() -> bool:
    """oneDNN is held at AVX2 (``ONEDNN_MAX_CPU_ISA``): then so are the facts below."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"


CPUINFO = Path("/proc/cpuinfo")


def parse_cpu_flags(text: str) -> frozenset[str]:
    """The x86 feature flags of a ``/proc/cpuinfo`` text: its first ``flags`` line (every core
    lists the same); empty for other CPUs (ARM names them ``Features``)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``CPUINFO``; empty where it cannot be read), without those
    above AVX2 when torch's kernels are held at AVX2 (``isa_capped``)."""
    try:
        flags = parse_cpu_flags(CPUINFO.read_text())
    except OSError:
        return frozenset()
    return frozenset(f for f in flags if not f.startswith(_ABOVE_AVX2)) if isa_capped() else flags


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


def int8_dot(device: torch.device) -> str:
    """The CPU's int8 dot-product unit, which decides int8's speed: amx, vnni or avx2 (16-bit
    pair sums, slower; activations then use 7 bits), "" off the CPU or on older CPUs."""
    flags = cpu_flags()
    if device.type != "cpu":
        return ""
    if "amx_int8" in flags:
        return "amx"
    if {"avx512_vnni", "avx_vnni"} & flags:
        return "vnni"
    return "avx2" if "avx2" in flags else ""


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls run natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its child processes: the DataLoader
    workers that decode images, live ones read from /proc (Linux), ended ones from rusage."""
    import multiprocessing
    import resource

    total = sum(
        getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )  # fmt: skip
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for child in multiprocessing.active_children():
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile, or no /proc: its time is in RUSAGE_CHILDREN once reaped
    return total
