"""Precision follows the hardware (issue 19, item 3): where the CPU lacks native bf16, ``auto``
never picks it, in training and in the bench's evaluation alike."""

import torch

from verydeep import hardware


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", "sse4_2"}))
    assert hardware.cpu_class() == "avx2" and not hardware.native_bf16(cpu)
    assert hardware.resolve_precision("auto", cpu) is None
    assert hardware.resolve_precision("bf16", cpu) is torch.bfloat16  # asked for: given
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.cpu_class() == "avx512_bf16" and hardware.resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert hardware.cpu_class() == "amx"


def test_this_machine_is_read():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)
    assert hardware.native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)
