"""Run by tests/test_distributed.py under torchrun (2 gloo ranks): a tiny VGG trained 5 SGD steps
with every ``dist.grad_comm`` choice, each rank on its half of one batch. Rank 0 saves, per
choice, the final weights, whether every rank ended with the same weights, and the bytes each
step all-reduced.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT.pt
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

from verydeep.bench.comm_bench import counted_all_reduce
from verydeep.distributed import DistEnv, check_comm, data_parallel, init
from verydeep.models.vgg import VGG

CHOICES = ("fp32", "fp16", "bf16", "powersgd")
STEPS = 5


def tiny() -> VGG:
    torch.manual_seed(1)
    return VGG("A", num_classes=3, width_mult=0.25, fc_width=32, crop_size=32, dropout=0)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g)


def main(out: str) -> None:
    env, cpu = DistEnv.from_environ(), torch.device("cpu")
    init(env, cpu)
    x, y = batch()
    mine = slice(4 * env.rank, 4 * env.rank + 4)
    result = {}
    for choice in CHOICES:
        net = tiny()
        # PowerSGD with buckets of 50 KB: many buckets, the case that hung under gloo
        bucket = 0.05 if choice == "powersgd" else 25.0
        comm = SimpleNamespace(
            grad_comm=choice,
            powersgd_rank=2,
            powersgd_start=2,
            bucket_mb=bucket,
            gradient_as_bucket_view=False,
        )
        check_comm(comm, cpu)
        ddp = data_parallel(net, cpu, comm)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        sent = []
        for _ in range(STEPS):
            opt.zero_grad()
            with counted_all_reduce() as calls:
                F.cross_entropy(ddp(x[mine]), y[mine]).backward()
            sent.append(sum(calls))
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in net.parameters()])
        every = [torch.empty_like(flat) for _ in range(env.world_size)]
        dist.all_gather(every, flat)
        agree = all(torch.equal(every[0], w) for w in every)
        result[choice] = {"weights": flat, "ranks_agree": agree, "bytes": sent}
    if env.is_main:
        torch.save(result, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
