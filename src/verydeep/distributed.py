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

import torch
import torch.distributed as dist

from .ranges import DEVICE_PATTERN


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environ(cls, environ: dict | None = None) -> DistEnv:
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


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
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: autotuning pays off
    return device


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU) when launched with several ranks.

    Under torchrun the key-value store outlives a restart: the c10d rendezvous shares one TCP
    store across rounds, and the process group's keys (each rank's gloo address) are not
    namespaced by round. After ``--max-restarts`` brings the workers back, a rank could read its
    peer's address from the dead round and fail with "Connection refused" (or hang). So the
    group's keys get a prefix per restart (``TORCHELASTIC_RESTART_COUNT``).
    """
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        dist.init_process_group(backend)
        return
    from torch.distributed.rendezvous import rendezvous

    store, rank, world_size = next(rendezvous("env://"))
    store = dist.PrefixStore(f"verydeep/restart{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)


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
