"""``verydeep bench``: speed against torchvision's VGG on this machine, as ratios from one run.

Example (``quick``: tiny nets and a handful of photos, seconds; the numbers mean nothing):
    >>> from verydeep.bench import run_bench
    >>> from verydeep.bench.config import BenchConfig
    >>> r = run_bench(BenchConfig.make(quick=True, rounds=1), parts=("inference",))
    >>> sorted(r)
    ['environment', 'inference', 'targets', 'wall_s']
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import PARTS, PHOTO_PARTS, BenchConfig, targets_for

if TYPE_CHECKING:  # torch is imported when a bench runs: `verydeep --help` must stay fast
    import torch


def environment(device: torch.device) -> dict:
    import torch

    from ..allocator import retain_freed_memory
    from ..hardware import cpu_class, int8_dot, isa_capped, native_bf16

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hardware_class": "cuda" if device.type == "cuda" else cpu_class(),
        "native_bf16": native_bf16(device),
        "isa_capped_at_avx2": isa_capped(),  # --isa avx2: torch's kernels held at AVX2 on a bigger CPU
        "machine": platform.processor() or platform.machine(),
        "device": str(device),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # as `verydeep` runs (allocator.py): freed blocks kept for the next step, for every variant
        "malloc_retains_freed": retain_freed_memory(),
    }
    env["int8_dot"] = int8_dot(device)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["tf32"] = torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later
    return env


def check_targets(r: dict) -> dict:
    """Each target that this run measured: target, measured value, met."""
    got = {}
    if "inference" in r:
        head = next(v for k, v in r["inference"].items() if k.startswith("batch_"))
        got["inference"] = head["speedup"]
        got["fraction_of_peak"] = head["fraction_of_peak"]
    if "training" in r:
        got["training"] = r["training"]["speedup"]
    if "perceptual" in r:
        got["perceptual"] = r["perceptual"]["speedup"]
    if "data" in r:
        got["data"] = r["data"]["speedup"]
    if "eval" in r:
        got["eval_dense_vs_crops"] = r["eval"]["ratio"]
    env = r["environment"]
    want = targets_for(env.get("native_bf16", True), "cuda" if "gpu" in env else "cpu")
    return {k: {"target": want[k], "measured": v, "met": v >= want[k]} for k, v in got.items()}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def run_bench(
    cfg: BenchConfig, parts: tuple[str, ...] = PARTS, progress: Callable[[str], None] | None = None
) -> dict:
    """Run the requested parts in one process; returns everything the table and --json show."""
    import torch

    from ..distributed import resolve_device
    from .comm_bench import bench_comm
    from .data_bench import bench_data
    from .eval_bench import bench_eval_cost, precision_check
    from .features_bench import bench_features
    from .loss_bench import bench_perceptual
    from .model_bench import bench_inference, bench_lrn, bench_training

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    device = resolve_device(cfg.device, what="bench device")
    cfg = cfg.sized_for(device.type)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # autotune: pick the fastest conv algorithm per shape
    photos = cfg.data_root
    needs_photos = sorted(PHOTO_PARTS & set(parts))
    if needs_photos and photos is not None and not photos.is_dir():
        raise ValueError(f"{needs_photos} need real photographs: {photos} is not a folder (--data DIR)")
    r: dict = {"environment": environment(device)}
    if needs_photos and photos is None:  # not the user's data: skipped, and the report says so
        r["skipped"] = {p: "no --data folder of photographs given" for p in needs_photos}
        parts = tuple(p for p in parts if p not in PHOTO_PARTS)
    if "precision" in parts and cfg.checkpoint is None:
        r.setdefault("skipped", {})["precision"] = "no --checkpoint of a trained net given"
        parts = tuple(p for p in parts if p != "precision")
    steps = {
        "inference": lambda: bench_inference(cfg, device, progress),
        "training": lambda: bench_training(cfg, device, progress),
        "perceptual": lambda: bench_perceptual(cfg, device, progress),
        "comm": lambda: bench_comm(cfg, progress),
        "lrn": lambda: bench_lrn(cfg, device, progress),
        "precision": lambda: precision_check(cfg, device, photos),
        "eval": lambda: bench_eval_cost(cfg, device, photos, progress),
        "data": lambda: bench_data(cfg, photos, progress),
        "features": lambda: bench_features(cfg, device, photos, progress),
    }
    r["wall_s"] = {}  # per part, so a slow machine shows where a full run's time goes
    for part in (p for p in PARTS if p in parts):
        t0 = time.perf_counter()
        try:
            r[part] = steps[part]()
        except (RuntimeError, ValueError, OSError, MemoryError) as e:
            # one part's failure (out of memory, an odd folder) must not lose the parts already
            # measured: it is reported in one line and the run goes on
            r.setdefault("failed", {})[part] = f"{type(e).__name__}: {_first_line(e)}"
        r["wall_s"][part] = time.perf_counter() - t0
    r["targets"] = check_targets(r)
    return r
