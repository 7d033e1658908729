"""torchrun-native data parallelism: read the environment, gate I/O on rank 0, seed per rank.

Synchronous like the paper (Section 3.3): each global batch is split across processes and the
gradients are averaged, so a step equals a single-process step on the whole batch.

Example:
    >>> from verydeep.distributed import DistEnv
    >>> env = DistEnv.from_environ({})
    >>> env.world_size, env.is_main
    (1, True)
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .ranges import DEVICE_PATTERN


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launched: bool = False  # started by torchrun (or another torchelastic agent)

    @classmethod
    def from_environ(cls, environ: dict | None = None) -> DistEnv:
        env = os.environ if environ is None else environ
        rank, local = int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))
        return cls(rank, local, int(env.get("WORLD_SIZE", 1)), "TORCHELASTIC_RUN_ID" in env)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Run as a process group: several ranks, or one launched by torchrun (one-rank DDP works
        the same way, so a one-GPU torchrun job exercises the collective path it will scale on)."""
        return self.world_size > 1 or self.launched


def resolve_device(name: str, env: DistEnv | None = None, what: str = "train.device") -> torch.device:
    """``auto`` -> cuda:<local_rank> when CUDA is there, else cpu; a one-line ValueError for a
    name that is not a device or asks for a GPU that is not there."""
    env = env or DistEnv()
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise ValueError(f"{what} must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{env.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{what} asks for CUDA but no CUDA device is available")
    device = torch.device(name)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"{what} asks for {name}, but there are {torch.cuda.device_count()} CUDA devices")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # cuDNN autotuning is the caller's choice: training's only
    return device


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU) when run distributed.

    By default torchrun's workers share the agents' key-value store, which outlives a restart,
    and the process group's keys (each rank's gloo address) are not namespaced by round: after
    ``--max-restarts`` brings the workers back, a rank could read its peer's address from the
    dead round and fail with "Connection refused" (or hang). So there the group's keys get a
    prefix per restart (``TORCHELASTIC_RESTART_COUNT``, the same on every agent when all of them
    restart their workers). With ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` each round's rank 0
    hosts a fresh store: no prefix is needed, and none may be used, since a node that was lost
    and started again counts its restarts from 0 (docs/SCALING.md: what a cluster needs).
    """
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    # NCCL binds the group to this rank's GPU at once (no guessing which device a collective uses)
    bind = {"device_id": device} if device.type == "cuda" else {}
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, **bind)
        return
    from torch.distributed.rendezvous import rendezvous

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store, rank, world_size = next(rendezvous("env://"))
    store = dist.PrefixStore(f"verydeep/restart{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, **bind)


def data_parallel(model: torch.nn.Module, device: torch.device, comm: Any) -> DistributedDataParallel:
    """``model`` in DDP as ``comm`` (a ``config.DistConfig``) asks: bucket size, gradients as
    bucket views, and the gradient communication hook of ``comm.grad_comm``."""
    cap = comm.bucket_mb
    if comm.grad_comm == "powersgd" and backend() == "gloo":
        # gloo completes a PowerSGD bucket's next all-reduce from a callback that blocks one of its
        # two worker threads until that all-reduce is done: two buckets in flight hold both
        # threads, and the job hangs. One bucket for every gradient keeps one chain in flight.
        grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        cap = max(cap, grads / 2**20 + 1)
    ddp = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=cap,
        gradient_as_bucket_view=comm.gradient_as_bucket_view,
    )
    hook = comm_hook(comm)
    if hook is not None:
        ddp.register_comm_hook(*hook)
    return ddp


def comm_hook(comm: Any) -> tuple[object, Any] | None:
    """(state, hook) for DDP's ``register_comm_hook``; None for fp32 (DDP's own all-reduce)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if comm.grad_comm == "fp16":
        return None, default_hooks.fp16_compress_hook
    if comm.grad_comm == "bf16":
        return None, default_hooks.bf16_compress_hook
    if comm.grad_comm == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=comm.powersgd_rank,
            start_powerSGD_iter=comm.powersgd_start,
            random_seed=0,  # every rank draws the same initial Q
        )
        return state, powerSGD_hook.powerSGD_hook
    return None


def check_comm(comm: Any, device: torch.device) -> None:
    """One all-reduce of the dtype ``comm.grad_comm`` sends, at start-up: a backend or device that
    cannot do it is a one-line error now, not a failure or a hang at the first step."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(comm.grad_comm)
    if dtype is None or not dist.is_initialized():
        return
    try:
        dist.all_reduce(torch.ones(1, dtype=dtype, device=device))
    except (RuntimeError, ValueError, TypeError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(
            f"dist.grad_comm={comm.grad_comm}: the {dist.get_backend()} backend cannot all-reduce "
            f"{dtype} on {device} ({why}); choose fp32 or powersgd"
        ) from None


def backend() -> str:
    """The process group's backend (nccl, gloo), or "none" outside one."""
    return str(dist.get_backend()) if dist.is_initialized() else "none"


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, env: DistEnv) -> None:
    """Seed + rank: ranks draw different crops and dropout masks, reproducibly."""
    s = seed + env.rank
    random.seed(s)
    torch.manual_seed(s)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (identity on one process)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_params(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if dist.is_initialized():
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
