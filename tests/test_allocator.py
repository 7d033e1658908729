"""allocator.retain_freed_memory: freed tensors are reused, not faulted in again (page faults,
counted by the kernel: no timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CODE = """
import resource, sys, torch
from verydeep.allocator import retain_freed_memory
assert retain_freed_memory() == (sys.argv[1] == "on")
def step():  # a training step's pattern: large tensors (above glibc's 32 MB mmap threshold)
    ts = [torch.ones(n) for n in (25_000_000, 12_000_000, 25_000_000, 6_000_000)]
    del ts
for _ in range(3):  # the heap grows to the step's size
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_memory_is_reused_not_faulted_in_again() -> None:
    faults = {}
    for mode in ("on", "off"):
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        if mode == "off":
            env["VERYDEEP_MALLOC"] = "default"
        out = subprocess.run(
            [sys.executable, "-c", _CODE, mode], env=env, capture_output=True, text=True, check=True
        )
        faults[mode] = int(out.stdout.split()[-1])
    # glibc's default maps and unmaps each block: all 270 MB fault in again on every step (66k
    # pages). Kept, the steps reuse the heap: no faults, or in some address-space layouts one
    # block that posix_memalign cannot fit into its old place (measured: 0 or 98k against 332k)
    assert faults["off"] > 5 * 10_000 and 2 * faults["on"] < faults["off"], faults
