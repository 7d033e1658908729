"""What only a GPU can show (issue 43, item 6), for scripts/gpu_check.sh: host syncs per training
step, peak memory at two batch sizes, the bf16 and TF32 matmul peaks, and VGG-16 training img/s
against torchvision's eager fp32 step and its channels_last bf16 step, in one run. Prints one
JSON object. On the CPU (``--device cpu``) it runs the same code at toy sizes; the CUDA-only
numbers are null there.

    python scripts/gpu_probe.py --device cuda > probe.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
import torchvision

from verydeep.bench.nets import build_pair, train_step
from verydeep.engine import StepState, train_one_epoch
from verydeep.numerics import Numerics, fp32_math


def _batch(n: int, crop: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, crop, crop, generator=g).to(device)
    return x, torch.randint(0, classes, (n,), generator=g).to(device)


def host_syncs(net: torch.nn.Module, batch, device: torch.device, steps: int = 5) -> float | None:
    """Host-device synchronisations per step of verydeep's training step (warnings counted under
    ``torch.cuda.set_sync_debug_mode("warn")``); None on the CPU."""
    if device.type != "cuda":
        return None
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, fused=True)
    kw = {"prepare": lambda t: t, "device": device, "numerics": Numerics("bf16")}
    train_one_epoch(net, [batch], opt, state=StepState(), **kw)  # warm-up: lazy initialisation
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_one_epoch(net, [batch] * steps, opt, state=StepState(), **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def peak_memory(batch_sizes: tuple[int, ...], crop: int, device: torch.device, **net_kw) -> dict:
    """GiB allocated at the peak of one bf16 channels_last training step, per batch size."""
    out = {}
    for n in batch_sizes:
        if device.type != "cuda":
            out[n] = None
            continue
        _, vd = build_pair("D", **net_kw)
        step = train_step(vd, device, _batch(n, crop, vd.num_classes, torch.device("cpu")), torch.bfloat16,
                          channels_last=True, engine=True)  # fmt: skip
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        out[n] = torch.cuda.max_memory_allocated() / 2**30
        del step, vd
        torch.cuda.empty_cache()
    return out


def matmul_peaks(n: int, device: torch.device) -> dict:
    """TFLOP/s of an n x n matmul in bf16 and in fp32 on TF32 tensor cores (the setting made
    through verydeep.numerics, as training and inference make it, and restored)."""
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("tf32", torch.float32)):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in "ab")
        with fp32_math("tf32"):
            a @ b
            _sync(device)
            t0, reps = time.perf_counter(), 10
            for _ in range(reps):
                a @ b
            _sync(device)
            out[name] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_rates(batch: int, crop: int, device: torch.device, rounds: int, **net_kw) -> dict:
    """Images/s of three training steps on the same weights: torchvision eager fp32, torchvision
    channels_last under bf16 autocast, verydeep's step (bf16, channels_last, fused SGD)."""
    tv, vd = build_pair("D", **net_kw)
    data = _batch(batch, crop, vd.num_classes, torch.device("cpu"))
    tv_bf16 = build_pair("D", **net_kw)[0]
    steps = {
        "torchvision_fp32": train_step(tv, device, data),
        "torchvision_bf16_cl": train_step(tv_bf16, device, data, torch.bfloat16, channels_last=True),
        "verydeep_bf16_cl": train_step(vd, device, data, torch.bfloat16, channels_last=True, engine=True),
    }
    out = {}
    for name, step in steps.items():
        step()  # warm-up (and cuDNN's autotuning)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(rounds):
            step()
        _sync(device)
        out[name] = rounds * batch / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        full, crop, batches, n, rounds = {"num_classes": 1000}, 224, (64, 128), 8192, 10
    else:
        full = {"width_mult": 1 / 16, "fc_width": 64, "crop_size": 32, "num_classes": 10}
        crop, batches, n, rounds = 32, (4, 8), 256, 2
    _, vd = build_pair("D", **full)
    vd = vd.to(device).to(memory_format=torch.channels_last)
    result = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "host_syncs_per_step": host_syncs(vd, _batch(batches[0], crop, vd.num_classes, device), device),
        "peak_memory_gib": peak_memory(batches, crop, device, **full),
        "matmul_tflops": matmul_peaks(n, device),
        "training_img_s": training_rates(batches[0], crop, device, rounds, **full),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
