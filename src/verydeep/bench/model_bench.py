"""Inference and training speed of VGG: torchvision's default against verydeep's fast modes.

Every number is a median over interleaved rounds (``timing.interleaved``); every ratio is the
median over rounds of that round's ratio (``timing.paired_ratio``), robust to load that drifts.
The hardware limit is a square matmul of the same dtype, timed in the same rounds as the nets.

Example:
    >>> import torch
    >>> from verydeep.bench.config import BenchConfig
    >>> from verydeep.bench.model_bench import bench_inference
    >>> cfg = BenchConfig.make(quick=True, rounds=1, batches=(2,))
    >>> r = bench_inference(cfg, torch.device("cpu"))
    >>> {"torchvision_fp32", "verydeep_fp32_cl", "matmul_fp32"} <= set(r["batch_2"]["variants"])
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from ..evaluation.precision import for_precision
from ..hardware import int8_dot, native_bf16
from ..models.summary import conv_macs
from ..models.winograd import winograd_convs
from ..numerics import resolve
from .config import BenchConfig, targets_for
from .nets import (
    PREP,
    build_pair,
    eager_inference,
    fast_inference,
    int8_inference,
    nnpack_inference,
    train_step,
)
from .profile import op_profile
from .timing import interleaved, matmul_variant, median, paired_ratio

log = logging.getLogger(__name__)
_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.int8: "int8"}
Progress = Callable[[str], None] | None


def dtypes(cfg: BenchConfig, device: torch.device) -> list[torch.dtype]:
    """The precisions worth timing here: bf16 only where it is native (emulated bf16 on an
    AVX2-only CPU runs ~7x slower than fp32 and stalled the bench), unless ``all_modes``."""
    return [torch.float32, torch.bfloat16] if cfg.all_modes or native_bf16(device) else [torch.float32]


def _try_compile(
    vd, device: torch.device, x: torch.Tensor, dtype: torch.dtype, progress: Progress
) -> Callable | None:
    """The compiled net in ``dtype``, or None (with the reason logged) when inductor fails here."""
    try:
        if progress:
            progress("torch.compile (inductor, freezing): first call compiles")
        fn = fast_inference(vd, device, dtype, compile=True)
        fn(x)
        return fn
    except Exception as e:  # inductor needs a C++ compiler and may fail on odd set-ups
        log.warning("torch.compile failed, skipped: %s", str(e).splitlines()[0][:200])
        return None


def _summarise(times: dict[str, list[float]], work: dict[str, float], unit: str) -> dict:
    """Per-variant median seconds, throughput (``work``/s) and the raw samples."""
    out = {}
    for name, ts in times.items():
        s = median(ts)
        out[name] = {"seconds": s, unit: work[name] / s, "samples": ts}
    return out


def bench_inference(cfg: BenchConfig, device: torch.device, progress: Progress = None) -> dict:
    """Per batch size: images/s of each variant, GFLOP/s, and the matmul peaks in the same rounds."""
    tv, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    gflop_img = 2 * conv_macs(vd, cfg.crop, cfg.crop) / 1e9
    kinds = dtypes(cfg, device)
    variants = _inference_variants(tv, vd, cfg, device, kinds)
    limits = _matmul_limits(kinds, device)
    results, compiled = {}, {}
    for batch in cfg.batches:
        x = torch.randn(batch, 3, cfg.crop, cfg.crop).to(device)  # on the device: copies are not timed
        fns = {name: (lambda f=f, x=x: f(x)) for name, f in variants.items()}
        if cfg.compile:
            compiled[batch] = _try_compile(vd, device, x, kinds[-1], progress)
            if compiled[batch] is not None:
                fns[f"verydeep_{_NAME[kinds[-1]]}_cl_compiled"] = lambda f=compiled[batch], x=x: f(x)
        work = {name: float(batch) for name in fns}
        for dt, backend in limits:
            name = f"matmul_{_NAME[dt]}" + ("" if backend == "torch" else f"_{backend}")
            fns[name], work[name] = matmul_variant(cfg.matmul_n, dt, device, backend=backend)
        times = interleaved(fns, cfg.rounds, warmup=1, device=device, progress=progress)
        v = _summarise(times, work, "per_s")
        for name in v:
            v[name]["gflops"] = v[name]["per_s"] * (1e-9 if name.startswith("matmul") else gflop_img)
        ratios = {n: paired_ratio(times, "torchvision_fp32", n) for n in v if n.startswith("verydeep")}
        best = max(ratios, key=ratios.__getitem__)
        # the limit: the faster kernel (torch's or oneDNN's) in the dtype the winning mode uses
        dtype_name = next((d for d in ("int8", "bf16") if d in best), "fp32")
        mm = max((n for n in v if n.startswith(f"matmul_{dtype_name}")), key=lambda n: v[n]["per_s"])
        # per round: the net's GFLOP/s over the matmul's, timed moments apart
        frac = paired_ratio(times, mm, best, scale=batch * gflop_img * 1e9 / work[mm])
        results[f"batch_{batch}"] = {
            "batch": batch,
            "variants": v,
            "speedups": ratios,
            "best": best,
            "speedup": ratios[best],
            "fraction_of_peak": frac,
            "limit": mm,
            "gflop_per_image": gflop_img,
        }
        want, head = targets_for(native_bf16(device), device.type), results[f"batch_{batch}"]
        missed = head["speedup"] < want["inference"] or head["fraction_of_peak"] < want["fraction_of_peak"]
        if cfg.profile and batch == cfg.batches[0] and missed:
            results[f"batch_{batch}"]["profile"] = op_profile(fns[best], device)
    if cfg.compile:
        results["compile"] = {"works": all(c is not None for c in compiled.values())}
    return results


def _inference_variants(tv: nn.Module, vd: nn.Module, cfg: BenchConfig, device: torch.device, kinds) -> dict:
    """The forward passes to time: torchvision's, verydeep's in each dtype, and on the CPU int8,
    NNPACK and Winograd."""
    variants = {"torchvision_fp32": eager_inference(tv, device)}
    for dt in kinds:
        variants[f"verydeep_{_NAME[dt]}_cl"] = fast_inference(vd, device, dt)
    if device.type == "cpu":  # the CPU-only candidates: int8 (--precision int8), NNPACK's Winograd
        g = torch.Generator().manual_seed(3)  # timing only: the precision part calibrates on photos
        variants["verydeep_int8_cl"] = int8_inference(vd, torch.randn(8, 3, cfg.crop, cfg.crop, generator=g))
        nnpack = nnpack_inference(vd)
        if nnpack is not None:
            variants["verydeep_fp32_nnpack"] = nnpack
        # --precision winograd: fewer multiplications, fp32 sums (what `auto` picks without bf16)
        variants["verydeep_winograd_cl"] = fast_inference(
            for_precision(vd, PREP, "winograd")[0], device, torch.float32
        )
    return variants


def _matmul_limits(kinds, device: torch.device) -> list[tuple[torch.dtype, str]]:
    """(dtype, backend) of each matmul peak to time beside the nets."""
    cpu = device.type == "cpu"
    onednn_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # it refuses bf16 on AVX2-only CPUs
    backends = ("torch", "onednn") if cpu else ("torch",)
    limits = [(dt, b) for dt in kinds for b in backends if b == "torch" or dt == torch.float32 or onednn_bf16]
    if cpu:  # int8: torch's matmul only where a dot-product unit makes it fast (42 s a call on AVX2)
        limits += [(torch.int8, b) for b in ("fbgemm", "onednn")]
        limits += [(torch.int8, "torch")] if int8_dot(device) != "avx2" else []
    return limits


def bench_training(cfg: BenchConfig, device: torch.device, progress: Progress = None) -> dict:
    """Training steps/s: torchvision fp32 against verydeep fp32/bf16 channels_last set-ups."""
    tv, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    g = torch.Generator().manual_seed(1)
    b = cfg.train_batch
    batch = (torch.randn(b, 3, cfg.crop, cfg.crop, generator=g), torch.randint(0, vd.num_classes, (b,)))
    fns = {"torchvision_fp32": train_step(tv, device, batch)}
    # channels_last where `verydeep train` picks it (train.channels_last=auto); elsewhere (AVX2-only
    # CPUs: oneDNN's NHWC backward ran at 0.75-0.92x there) only with --all-modes, as it costs
    # a quarter of this part's time on a slow CPU and is not what users run there
    nhwc = resolve("fp32", device, channels_last="auto").channels_last
    for dt in dtypes(cfg, device) if nhwc or cfg.all_modes else []:
        amp = dt if dt != torch.float32 else None
        fns[f"verydeep_{_NAME[dt]}_cl"] = train_step(vd, device, batch, amp, channels_last=True, engine=True)
    if device.type == "cpu" and not native_bf16(device):  # AVX2: oneDNN's NHWC backward was slower
        if cfg.all_modes:  # direct convs in NCHW: 0.96-1.08x in every run so far, a slow third of the part
            fns["verydeep_fp32_nchw"] = train_step(vd, device, batch, None, channels_last=False, engine=True)
        # fewer multiplications: what `verydeep train` runs here (train.winograd and channels_last
        # "auto"): NCHW input, Winograd F(4x4, 3x3) convs, fused C++ transforms where they build
        wg = winograd_convs(vd)
        fns["verydeep_fp32_winograd"] = train_step(wg, device, batch, None, channels_last=False, engine=True)
    times = interleaved(fns, cfg.rounds, warmup=1, device=device, progress=progress)
    v = _summarise(times, {n: float(b) for n in fns}, "per_s")
    ratios = {n: paired_ratio(times, "torchvision_fp32", n) for n in v if n.startswith("verydeep")}
    best = max(ratios, key=ratios.__getitem__)
    speedup = ratios[best]
    out = {
        "batch": b,
        "optimizer": "SGD momentum 0.9, weight decay 5e-4 (torchvision: on every parameter; verydeep: "
        "verydeep train's groups, weights only, fused, through engine.train_one_epoch)",
        "variants": v,
        "speedups": ratios,
        "best": best,
        "speedup": speedup,
    }
    if cfg.profile and speedup < targets_for(native_bf16(device), device.type)["training"]:
        out["profile"] = op_profile(fns[best], device)
    return out


def bench_lrn(cfg: BenchConfig, device: torch.device, progress: Progress = None) -> dict:
    """A-LRN's one LRN layer, forward + backward at the training batch and crop: verydeep's
    banded-convolution LRN against ``nn.LocalResponseNorm`` (the same numbers; tested)."""
    from ..models.vgg import LRN, make_layers

    layers = make_layers("A-LRN", 3, cfg.model_kwargs.get("width_mult", 1.0))
    ours = next(m for m in layers if isinstance(m, LRN))  # the layer exactly as the net has it
    channels = layers[0].out_channels
    g = torch.Generator().manual_seed(2)
    x = torch.rand(cfg.train_batch, channels, cfg.crop, cfg.crop, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()  # as training runs it

    def step(layer: torch.nn.Module) -> Callable[[], None]:
        return lambda: torch.autograd.grad(layer(x).sum(), x)

    theirs = torch.nn.LocalResponseNorm(ours.size, ours.alpha, ours.beta, ours.k)
    fns = {"torch": step(theirs), "verydeep": step(ours)}
    times = interleaved(fns, cfg.rounds, warmup=1, device=device, progress=progress)
    return {
        "input": [cfg.train_batch, channels, cfg.crop, cfg.crop],
        "seconds": {k: median(v) for k, v in times.items()},
        "speedup": paired_ratio(times, "torch", "verydeep"),
    }
