"""Precision follows the hardware: where the CPU lacks native bf16, ``auto``
never picks it, in training and in the bench's evaluation alike."""

import subprocess
import time
from pathlib import Path

import pytest
import torch

from verydeep import hardware
from verydeep.numerics import resolve


def amp(request: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training resolves ``train.precision=request`` to."""
    return resolve(request, device, training=True).amp_dtype


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", "sse4_2"}))
    assert hardware.cpu_class() == "avx2" and not hardware.native_bf16(cpu)
    assert amp("auto", cpu) is None
    assert amp("bf16", cpu) is torch.bfloat16  # asked for: given
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.cpu_class() == "avx512_bf16" and amp("auto", cpu) is torch.bfloat16
    assert hardware.int8_dot(cpu) == "avx2"  # AVX-512 without VNNI: int8 pair sums as on AVX2
    monkeypatch.setattr(
        hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile", "amx_int8"})
    )
    assert hardware.cpu_class() == "amx" and hardware.int8_dot(cpu) == "amx"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx_vnni"}))
    assert hardware.int8_dot(cpu) == "vnni" and hardware.int8_dot(torch.device("cuda")) == ""


CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
# saved /proc/cpuinfo texts (one or two cores each): the class and the choices ``auto`` makes
MACHINES = {
    "zen1_epyc": ("avx2", False, "avx2"),
    "zen3_epyc": ("avx2", False, "avx2"),
    "skylake_sp": ("avx512", False, "avx2"),
    "zen4_genoa": ("avx512_bf16", True, "vnni"),
    "sapphire_rapids": ("amx", True, "amx"),
    "neoverse_n1": ("other", False, ""),
}


@pytest.fixture
def machine(monkeypatch):
    """Point ``hardware.CPUINFO`` at a saved text and re-read it (the flags are cached)."""

    def use(name: str) -> None:
        monkeypatch.setattr(hardware, "CPUINFO", CPUINFO / f"{name}.txt")
        hardware.cpu_flags.cache_clear()

    yield use
    hardware.cpu_flags.cache_clear()


@pytest.mark.parametrize("name", MACHINES)
def test_each_cpu_class_is_read_from_its_cpuinfo(machine, name):
    machine(name)
    cls, bf16, dot = MACHINES[name]
    cpu = torch.device("cpu")
    assert hardware.cpu_class() == cls and hardware.native_bf16(cpu) is bf16
    assert hardware.int8_dot(cpu) == dot
    assert (amp("auto", cpu) is torch.bfloat16) is bf16


def test_a_missing_cpuinfo_gives_no_flags(machine):
    machine("absent")
    assert hardware.cpu_flags() == frozenset() and hardware.cpu_class() == "other"


def test_this_machine_is_read():
    """Against grep: the flags ``auto`` decides by are this machine's own."""
    out = subprocess.run(["grep", "-m1", "^flags", "/proc/cpuinfo"], capture_output=True, text=True)
    hardware.cpu_flags.cache_clear()
    if out.returncode != 0:
        assert hardware.cpu_flags() == frozenset()
        return
    want = set(out.stdout.partition(":")[2].split())
    if hardware.isa_capped():
        want = {f for f in want if not f.startswith(("avx512", "amx", "avx_vnni", "avx10"))}
    assert hardware.cpu_flags() == want and len(want) > 10
    assert hardware.native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & want)


def test_kernels_held_at_avx2_make_the_facts_avx2(monkeypatch):
    """``bench --isa avx2`` (ONEDNN_MAX_CPU_ISA=AVX2 and friends): on a CPU with AMX or AVX-512
    the facts, and so every ``auto`` choice, are those of an AVX2-only machine."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hardware.cpu_flags.cache_clear()
    try:
        flags = hardware.cpu_flags()
        assert not any(f.startswith(("avx512", "amx", "avx_vnni")) for f in flags)
        assert hardware.cpu_class() in ("avx2", "other") and not hardware.native_bf16(torch.device("cpu"))
        assert amp("auto", torch.device("cpu")) is None
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        hardware.cpu_flags.cache_clear()
    assert hardware.AVX2_ENV["ONEDNN_MAX_CPU_ISA"] == "AVX2" and len(hardware.AVX2_ENV) == 4


def test_channels_last_auto_follows_the_hardware(monkeypatch):
    """NCHW trains faster than channels_last on AVX2-only CPUs (fp32 NHWC backward),
    channels_last wins where bf16 is native; an explicit setting is obeyed."""
    from verydeep.config import RunConfig

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})

    def cl(setting: str) -> bool:
        return resolve("fp32", cpu, channels_last=setting, training=True).channels_last

    assert not cl("auto") and cl("true")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert cl("auto") and not cl("false")
    assert RunConfig().train.channels_last == "auto"
    with pytest.raises(ValueError, match=r"train\.channels_last"):  # a bool: say which word
        RunConfig.from_dict({"train": {"channels_last": True}})
    assert RunConfig.from_sources(overrides=["train.channels_last=false"]).train.channels_last == "false"
    with pytest.raises(ValueError, match=r"train\.channels_last must be one of"):
        RunConfig.from_sources(overrides=["train.channels_last=maybe"])


class _Busy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        t = time.process_time()
        while time.process_time() - t < 0.1:  # 0.1 CPU-s of decoding, in the worker
            pass
        return i


def test_winograd_auto_follows_the_hardware(monkeypatch):
    """Winograd convs train by default only where the fp32 step is what runs and bf16 is not
    native (an AVX2-only CPU); never on a GPU or under bf16; an explicit setting is obeyed."""
    from verydeep.config import RunConfig

    cpu = torch.device("cpu")

    def mode(precision: str, winograd: str, device: torch.device = cpu) -> str:
        return resolve(precision, device, winograd=winograd, training=True).mode

    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})
    assert mode("auto", "auto") == "winograd" and mode("fp32", "auto") == "winograd"
    assert mode("bf16", "auto") == "bf16"
    assert mode("fp32", "false") == mode("auto", "false") == "fp32"
    assert mode("fp32", "auto", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert mode("fp32", "auto") == "fp32" and mode("auto", "auto") == "bf16"
    assert mode("fp32", "true") == "winograd"
    with pytest.raises(ValueError, match="precision=fp32"):
        mode("bf16", "true")
    assert RunConfig().train.winograd == "auto"
    with pytest.raises(ValueError, match=r"train\.winograd must be one of"):
        RunConfig.from_sources(overrides=["train.winograd=fast"])


def test_cpu_seconds_counts_the_decoding_workers():
    """The epoch's cpu_s in log.csv: a DataLoader worker's CPU time is counted, which the main
    process's own clock (``time.process_time``) never sees."""
    from verydeep.hardware import cpu_seconds

    c0, p0 = cpu_seconds(), time.process_time()
    loader = torch.utils.data.DataLoader(_Busy(), num_workers=1, persistent_workers=True, batch_size=1)
    assert list(loader) == [torch.tensor([i]) for i in range(4)]
    assert cpu_seconds() - c0 >= 0.35 > time.process_time() - p0
