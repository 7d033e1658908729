"""Interleaved timing: ratios that survive a busy machine.

Each round runs every variant once (alternating the order between rounds), so a burst of load
from other processes hits all variants alike; the report uses the median over rounds. Device
work is synchronised before and after each call, so GPU timings measure the work, not the launch.

Example:
    >>> from verydeep.bench.timing import interleaved, median, paired_ratio
    >>> t = interleaved({"a": lambda: sum(range(1000)), "b": lambda: None}, rounds=3, warmup=0)
    >>> sorted(t), len(t["a"]), median([3.0, 1.0, 2.0])
    (['a', 'b'], 3, 2.0)
    >>> paired_ratio({"slow": [2.0, 8.0, 3.0], "fast": [1.0, 4.0, 1.0]}, "slow", "fast")
    2.0
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(times: dict[str, list[float]], slow: str, fast: str, scale: float = 1.0) -> float:
    """Median over rounds of ``scale * t_slow / t_fast``: each ratio pairs calls made moments apart.

    When the load of other processes drifts during a run, a ratio of per-variant medians can
    pair a busy sample with a quiet one; per-round ratios cannot.
    """
    return median([scale * a / b for a, b in zip(times[slow], times[fast], strict=True)])


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``rounds`` samples each, variants interleaved."""
    for _ in range(warmup):
        for name, fn in fns.items():
            if progress:
                progress(f"warm-up {name}")
            fn()
            synchronize(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if progress:
                progress(f"round {r + 1}/{rounds} {name}")
            synchronize(device)
            t0 = clock()
            fns[name]()
            synchronize(device)
            times[name].append(clock() - t0)
    return times


def matmul_variant(
    n: int, dtype: torch.dtype, device: torch.device | str, repeat: int = 4, backend: str = "torch"
) -> tuple[Callable[[], object], float]:
    """A square ``n``-matmul call (``repeat`` products) and its FLOPs: the hardware-limit probe.

    ``backend``: ``torch`` (``torch.mm``: MKL for fp32 on CPU; ``torch._int_mm`` for int8) or
    ``onednn`` (oneDNN's inner product on oneDNN-layout tensors, CPU fp32/bf16 only); for int8 on
    CPU also ``fbgemm`` and ``onednn`` as torch's quantised linear layer (the kernels the int8 net
    runs: ``torch._int_mm`` has no fast path without a dot-product unit, 1.6 GFLOP/s on AVX2).
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    if dtype == torch.int8 and backend != "torch":
        mm: Callable[[], object] = _quantized_linear(n, backend, g)
    elif dtype == torch.int8:
        a, b = (torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8).to(device) for _ in "ab")
        mm = lambda: torch._int_mm(a, b)  # noqa: E731
    elif backend == "onednn":
        a, b = (torch.randn(n, n, generator=g).to(dtype=dtype).to_mkldnn() for _ in "ab")
        mm = lambda: torch._C._nn.mkldnn_linear(a, b, None)  # noqa: E731
    else:
        a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in "ab")
        out = torch.empty(n, n, device=device, dtype=dtype)
        mm = lambda: torch.mm(a, b, out=out)  # noqa: E731

    def fn() -> None:
        for _ in range(repeat):
            mm()

    return fn, 2.0 * n**3 * repeat


def _quantized_linear(n: int, engine: str, g: torch.Generator) -> Callable[[], object]:
    """An ``n``-square int8 product through ``quantized::linear`` packed for ``engine``."""
    import warnings

    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine  # the packing picks the kernel; calls keep it
        with warnings.catch_warnings():  # quantised tensors are deprecated, not gone, in this torch
            warnings.simplefilter("ignore")
            a = torch.quantize_per_tensor(torch.randn(n, n, generator=g), 0.05, 128, torch.quint8)
            w = torch.quantize_per_tensor(torch.randn(n, n, generator=g), 0.05, 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(w, None)
    finally:
        torch.backends.quantized.engine = previous
    return lambda: torch.ops.quantized.linear(a, packed, 0.1, 128)
