"""The arithmetic a net runs in, for training and inference alike: one resolver from (what was
asked, the device, what the hardware does natively) to a ``Numerics``: the mode (fp32, tf32,
winograd, bf16, int8, int8-checked), the memory format, and the context forward passes run in.

- ``fp32``: IEEE fp32 everywhere, convolutions included. PyTorch's own default lets cuDNN run
  fp32 convolutions on TF32 tensor cores (10-bit mantissa) while matmuls stay IEEE; here fp32
  means fp32 on every device, so CPU and GPU runs, and the exactness tests, agree to fp32
  rounding.
- ``tf32``: fp32 weights and activations, convolutions and matmuls on TF32 tensor cores. An
  NVIDIA GPU of compute capability 8.0 or newer only; asked for, never chosen by ``auto``.
- ``bf16``: autocast to bf16. ``auto`` picks it where bf16 is native (AMX, AVX512-BF16, GPUs
  that support it); on AVX2-only CPUs torch emulates it, about 7x slower than fp32.
- ``winograd``: fp32 with the eligible 3x3 convolutions as Winograd F(4x4, 3x3); CPU only.
  Training reaches it through ``train.winograd``, inference through ``--precision winograd``;
  ``auto`` picks it on CPUs without native bf16.
- ``int8`` / ``int8-checked``: inference only, CPU only, asked for (evaluation/precision.py).

The TF32 switch is set with torch's ``fp32_precision`` API (the older ``allow_tf32`` flags where
torch predates it; the two must not be mixed) inside ``Numerics.context`` and restored on exit,
so a library call never changes the caller's global settings.

Example:
    >>> import torch
    >>> from verydeep.numerics import resolve
    >>> resolve("fp32", torch.device("cpu")).mode, resolve("fp32", torch.device("cpu")).amp_dtype
    ('fp32', None)
    >>> resolve("auto", torch.device("cpu"), training=True).mode in ("bf16", "winograd")
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from . import hardware

TRAIN_PRECISIONS = ("auto", "bf16", "tf32", "fp32")
PRECISIONS = ("fp32", "tf32", "winograd", "bf16", "int8", "int8-checked", "auto")
INT8 = ("int8", "int8-checked")
CPU_ONLY = (*INT8, "winograd")


@dataclass(frozen=True)
class Numerics:
    """A resolved choice: ``mode`` (fp32 | tf32 | winograd | bf16 | int8 | int8-checked) and
    whether inputs and weights are channels_last."""

    mode: str = "fp32"
    channels_last: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.mode == "bf16" else None

    @property
    def winograd(self) -> bool:
        return self.mode == "winograd"

    @property
    def tf32(self) -> bool:
        return self.mode == "tf32"

    def context(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """What forward and backward passes run inside: bf16 autocast for ``bf16``, and on a GPU
        the fp32 math (TF32 for ``tf32``, IEEE otherwise)."""
        device = torch.device(device)
        stack = contextlib.ExitStack()
        if device.type == "cuda":
            stack.enter_context(fp32_math("tf32" if self.tf32 else "ieee"))
        if self.amp_dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=self.amp_dtype))
        return stack


FP32 = Numerics()


@contextlib.contextmanager
def fp32_math(mode: str) -> Iterator[None]:
    """CUDA's fp32 convolutions and matmuls as ``mode`` (``"tf32"`` or ``"ieee"``) inside the
    block, restored after it."""
    if hasattr(torch.backends, "fp32_precision"):  # torch 2.9 and later
        knobs = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
        before = [k.fp32_precision for k in knobs]
        for k in knobs:
            k.fp32_precision = mode
        try:
            yield
        finally:
            for k, b in zip(knobs, before, strict=True):
                k.fp32_precision = b
        return
    knobs = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [k.allow_tf32 for k in knobs]
    for k in knobs:
        k.allow_tf32 = mode == "tf32"
    try:
        yield
    finally:
        for k, b in zip(knobs, before, strict=True):
            k.allow_tf32 = b


def resolve(
    request: str,
    device: torch.device | str,
    *,
    channels_last: str | bool = False,
    winograd: str = "auto",
    training: bool = False,
) -> Numerics:
    """``request`` (``TRAIN_PRECISIONS`` when ``training``, else ``PRECISIONS``) resolved for
    ``device``. ``winograd`` (training's ``train.winograd``: auto | true | false) and
    ``channels_last`` (a bool, or auto | true | false) complete the choice. A request the device
    cannot run is a one-line ValueError."""
    device = torch.device(device)
    allowed = TRAIN_PRECISIONS if training else PRECISIONS
    if request not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {request!r}")
    if request == "auto":
        request = "bf16" if hardware.native_bf16(device) else "winograd" if device.type == "cpu" else "fp32"
        if training and request == "winograd" and winograd == "false":
            request = "fp32"
    elif training and request == "fp32" and winograd != "false":
        request = "winograd" if winograd == "true" or _winograd_pays(device) else "fp32"
    if training and winograd == "true" and request != "winograd":
        raise ValueError(f"train.winograd=true needs train.precision=fp32, not {request} (Winograd is fp32)")
    if request == "tf32" and not _has_tf32(device):
        raise ValueError(f"precision tf32 needs an NVIDIA GPU of compute capability 8.0+, not {device}")
    if request in CPU_ONLY and device.type != "cpu" and not (training and winograd == "true"):
        raise ValueError(f"{request} runs on the CPU only, not {device}; use precision bf16 there")
    return Numerics(request, _channels_last(channels_last, device))


def _winograd_pays(device: torch.device) -> bool:
    """Winograd on a CPU without native bf16: there fp32 training is at the matmul limit, and
    fewer products are what is left (experiments/bench_notes.md); cuDNN picks its own algorithms."""
    return device.type == "cpu" and not hardware.native_bf16(device)


def _has_tf32(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def _channels_last(setting: str | bool, device: torch.device) -> bool:
    """``true``/``false`` as asked; ``auto`` -> channels_last on a GPU and where the CPU has
    native bf16, NCHW on AVX2-only CPUs (their fp32 NHWC backward is slower)."""
    if isinstance(setting, bool):
        return setting
    if setting in ("true", "false"):
        return setting == "true"
    return device.type == "cuda" or hardware.native_bf16(device)
