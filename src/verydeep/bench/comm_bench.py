"""Gradient traffic per optimiser step of each ``dist.grad_comm`` choice, counted, not computed.

VGG-16 holds 138 M parameters, 124 M of them in FC6-FC8, so a data-parallel step all-reduces
about 553 MB of fp32 gradients. Each choice is measured by running DDP steps with that choice's
communication hook (``distributed.data_parallel``) while every ``torch.distributed.all_reduce``
call is counted: the bytes handed to the collective per step, as the hooks really send them
(PowerSGD's P and Q factors, its uncompressed small tensors, the half-precision buckets). A
one-rank gloo group suffices: the hooks hand the collective the same tensors whatever the world
size (a ring all-reduce then moves 2 (N-1)/N times these bytes in and out of each rank).
fp32 runs through ``allreduce_hook``, DDP's own all-reduce written in Python, so it is counted too.

Example:
    >>> from verydeep.bench.comm_bench import bench_comm
    >>> from verydeep.bench.config import BenchConfig
    >>> r = bench_comm(BenchConfig.make(quick=True))
    >>> r["choices"]["fp16"]["bytes_per_step"] * 2 == r["choices"]["fp32"]["bytes_per_step"]
    True
"""

from __future__ import annotations

import contextlib
import copy
import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch
import torch.distributed as dist

from ..distributed import comm_hook, data_parallel
from ..models.summary import conv_macs
from .config import BenchConfig
from .nets import build_pair

CHOICES = ("fp32", "fp16", "bf16", "powersgd")
POWERSGD_RANKS = (1, 4)

# The step-time prediction's assumptions (docs/SCALING.md says so): no GPU has timed VGG-16 here,
# so the compute rate is a published peak times an assumed utilisation.
PEAK_FLOPS = 989e12  # NVIDIA H100 SXM datasheet: dense bf16 tensor-core peak
ASSUMED_MFU = 0.40  # fraction of that peak a VGG-16 training step reaches (assumed)
PER_GPU_BATCH = 32
LINKS_GBPS = (100, 400)  # network bandwidth per GPU, each direction
GPUS = (1, 2, 4, 8, 16, 32, 64)


@contextlib.contextmanager
def counted_all_reduce() -> Iterator[list[int]]:
    """Bytes of every ``torch.distributed.all_reduce`` call made meanwhile (the hooks look the
    function up on the module at each call, so replacing it there sees them all)."""
    calls: list[int] = []
    real = dist.all_reduce

    def counting(tensor: torch.Tensor, *args, **kwargs):
        calls.append(tensor.numel() * tensor.element_size())
        return real(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        yield calls
    finally:
        dist.all_reduce = real


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """A one-process gloo group for the measurement, unless one is already up."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def step_bytes(model: torch.nn.Module, comm: SimpleNamespace, batch: torch.Tensor, steps: int) -> int:
    """Bytes all-reduced in the last of ``steps`` DDP steps of ``model`` under ``comm``."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    ddp = data_parallel(model, torch.device("cpu"), comm)
    if comm_hook(comm) is None:  # fp32: DDP's own all-reduce, in C++; the same one in Python
        ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    per_step = []
    for _ in range(steps):
        with counted_all_reduce() as calls:
            ddp(batch).sum().backward()
        per_step.append(sum(calls))
        model.zero_grad(set_to_none=True)
    return per_step[-1]


def bench_comm(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Bytes per step of every choice on VGG-16 (the tiny net with ``quick``), with the ratio to
    fp32's; PowerSGD at ranks 1 and 4, measured once its warm-up (2 steps here) is over."""
    _, net = build_pair("D", **cfg.model_kwargs)
    params = sum(p.numel() for p in net.parameters())
    batch = torch.randn(1, 3, cfg.crop, cfg.crop, generator=torch.Generator().manual_seed(5))
    out: dict = {"parameters": params, "choices": {}}
    with one_rank_group():
        for name in (*CHOICES[:3], *(f"powersgd-{r}" for r in POWERSGD_RANKS)):
            if progress:
                progress(f"grad_comm {name}")
            kind, _, rank = name.partition("-")
            comm = SimpleNamespace(
                grad_comm=kind, powersgd_rank=int(rank or 1), powersgd_start=2, bucket_mb=25.0,
                gradient_as_bucket_view=False,
            )  # fmt: skip
            n = step_bytes(copy.deepcopy(net), comm, batch, steps=3)  # a fresh net: no old hooks
            out["choices"][name] = {"bytes_per_step": n}
    fp32 = out["choices"]["fp32"]["bytes_per_step"]
    for v in out["choices"].values():
        v["vs_fp32"] = v["bytes_per_step"] / fp32
    out["train_gflop_per_image"] = 6 * conv_macs(net, cfg.crop, cfg.crop) / 1e9  # forward 2, backward 4
    out["predicted"] = predicted_steps(out["choices"], out["train_gflop_per_image"])
    return out


def predicted_steps(choices: dict, gflop_per_image: float) -> list[dict]:
    """Step time and images/s of N GPUs for each choice's measured bytes: compute at
    ``ASSUMED_MFU`` of ``PEAK_FLOPS`` on ``PER_GPU_BATCH`` images, a ring all-reduce moving
    2 (N - 1) / N times the bytes over each GPU's link, the two overlapped (DDP all-reduces each
    bucket while the backward pass goes on: an optimistic bound; without overlap add them)."""
    compute = PER_GPU_BATCH * gflop_per_image * 1e9 / (PEAK_FLOPS * ASSUMED_MFU)
    rows = []
    for gbps in LINKS_GBPS:
        for name, v in choices.items():
            for n in GPUS:
                comm = 2 * (n - 1) / n * v["bytes_per_step"] / (gbps * 1e9 / 8)
                step = max(compute, comm)
                rows.append({
                    "link_gbps": gbps, "grad_comm": name, "gpus": n, "compute_ms": 1e3 * compute,
                    "comm_ms": 1e3 * comm, "step_ms": 1e3 * step, "images_per_s": n * PER_GPU_BATCH / step,
                    "scaling_efficiency": compute / step,
                })  # fmt: skip
    return rows
