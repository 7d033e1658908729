"""Page faults, kernel time and resident memory per VGG-16 training step, with glibc's malloc as
it is and as `verydeep` sets it (allocator.py): what docs/BENCHMARKS.md quotes.

    VERYDEEP_MALLOC=default python scripts/step_faults.py   # glibc's default
    python scripts/step_faults.py                           # freed blocks kept (the CLI's setting)
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch

from verydeep.allocator import retain_freed_memory
from verydeep.bench.nets import build_pair, train_step
from verydeep.models.winograd import winograd_convs


def main(steps: int = 12) -> None:
    print(f"freed memory kept: {retain_freed_memory()}")
    tv, vd = build_pair("D")
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(16, 3, 224, 224, generator=g), torch.randint(0, 1000, (16,)))
    cpu = torch.device("cpu")
    fns = {
        "torchvision": train_step(tv, cpu, batch),
        "verydeep winograd": train_step(
            winograd_convs(vd), cpu, batch, None, channels_last=False, engine=True
        ),
    }
    for i in range(steps):
        for name, fn in fns.items():
            a = resource.getrusage(resource.RUSAGE_SELF)
            fn()
            b = resource.getrusage(resource.RUSAGE_SELF)
            statm = Path("/proc/self/statm").read_text().split()
            rss = int(statm[1]) * resource.getpagesize() / 2**30
            print(
                f"step {i} {name:18s} faults {b.ru_minflt - a.ru_minflt:8d}"
                f"  kernel {b.ru_stime - a.ru_stime:5.2f} s  user {b.ru_utime - a.ru_utime:5.2f} s"
                f"  resident {rss:.2f} GB",
                flush=True,
            )


if __name__ == "__main__":
    main()
