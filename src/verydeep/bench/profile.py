"""Where the time goes, for targets the bench misses: top ops (torch.profiler) or functions.

Example:
    >>> from verydeep.bench.profile import python_profile
    >>> "sorted" in python_profile(lambda: sorted(range(1000)), rows=5)
    True
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def op_profile(fn: Callable[[], object], device: torch.device, rows: int = 12) -> str:
    """torch.profiler table of the ``rows`` ops with the most self time, for one call of ``fn``."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)


def python_profile(fn: Callable[[], object], rows: int = 12) -> str:
    """cProfile's top functions by own time (the data pipeline is PIL and Python, not torch ops)."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(rows)
    return out.getvalue()
