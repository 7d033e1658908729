"""What bf16 costs in accuracy, and what dense evaluation saves over 150 crops, on real photos.

Precision: the same He-initialised weights run in fp32 and in verydeep's bf16 mode on centre
crops of real photographs; we report top-1 agreement, top-5 overlap and the largest logit
difference, and how many photos have an fp32 top-1/top-2 margin smaller than that difference
(those are the only ones whose top-1 bf16 rounding can legitimately flip).

Evaluation cost (Section 3.2): dense evaluation at 3 scales with flips (6 fully-convolutional
passes) against 150 crops (5x5 grid x 2 flips x 3 scales through the FC form), per photo, in the
same precision, through the functions ``verydeep eval`` runs (``dense_probs``,
``multicrop_probs``); rescaling is done before timing (same for both).

Example:
    >>> from verydeep.bench.eval_bench import photos
    >>> callable(photos)
    True
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF

from ..config import pixels
from ..data.folder import scan_image_folder
from ..data.images import load_image
from ..data.preprocess import Preprocess
from ..data.transforms import CentreCropTransform, rescale_smallest
from ..evaluation.core import Runtime, dense_probs, multicrop_probs
from ..hardware import native_bf16
from ..models.summary import conv_macs
from .config import BenchConfig
from .nets import build_pair, fast_inference
from .timing import interleaved, median, paired_ratio

PREP = Preprocess.preset("paper", mean=(123.68, 116.78, 103.94))  # the ILSVRC mean pixel


def photos(root: Path, n: int) -> list[Path]:
    """``n`` photographs spread over the classes of ``root`` (an ImageFolder tree), sorted."""
    samples, _ = scan_image_folder(root)
    step = max(1, len(samples) // n)
    return [p for p, _ in samples[::step][:n]]


def precision_check(cfg: BenchConfig, device: torch.device, root: Path) -> dict:
    """fp32 vs bf16 (weights and activations) logits of one net on real photographs."""
    _, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    centre = CentreCropTransform(pixels(256, cfg.crop), cfg.crop)
    x = PREP(
        torch.stack(
            [centre(load_image(p, min_side=centre.min_side)) for p in photos(root, cfg.precision_images)]
        )
    )
    ref = fast_inference(vd, device, torch.float32)(x).float().cpu()
    low = fast_inference(vd, device, torch.bfloat16)(x).float().cpu()
    top2 = ref.topk(2, dim=1)
    diff = (low - ref).abs().amax(dim=1)
    margin = top2.values[:, 0] - top2.values[:, 1]
    k = min(5, ref.shape[1])
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / k
        for a, b in zip(ref.topk(k, 1).indices, low.topk(k, 1).indices, strict=True)
    ]
    return {
        "images": len(x),
        "top1_agreement": (ref.argmax(1) == low.argmax(1)).float().mean().item(),
        "top5_overlap": sum(overlap) / len(overlap),
        "max_abs_logit_diff": diff.max().item(),
        "logit_std": ref.std().item(),
        "median_top1_margin": margin.median().item(),
        "near_ties": int((margin < diff).sum()),  # margin below this photo's bf16 error
        "disagreements_at_near_ties": int(((ref.argmax(1) != low.argmax(1)) & (margin < diff)).sum()),
    }


def bench_eval_cost(cfg: BenchConfig, device: torch.device, root: Path, progress=None) -> dict:
    """Seconds per photo: dense 3-scale + flip against 150-crop multi-crop, same fast mode."""
    _, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    vd = vd.to(device).eval().to(memory_format=torch.channels_last)
    # what `verydeep eval` runs: its dense and multi-crop functions, bf16 only where it is native
    rt = Runtime(device, bf16=native_bf16(device), channels_last=True)
    qs = [pixels(q, cfg.crop) for q in cfg.eval_scales]
    imgs = [load_image(p, min_side=max(qs)) for p in photos(root, cfg.eval_images)]
    scaled = [[TF.pil_to_tensor(rescale_smallest(im, q))[None] for q in qs] for im in imgs]

    def run(method):
        with torch.inference_mode():
            return [method(vd, s, PREP, rt=rt) for per in scaled for s in per]

    fns = {"dense_3scale_flip": lambda: run(dense_probs), "multicrop_150": lambda: run(multicrop_probs)}
    # no warm-up (each call is long); rounds pair dense and crops moments apart for the ratio
    times = interleaved(fns, rounds=cfg.rounds, warmup=0, device=device, progress=progress)
    per_img = {k: median(v) / len(imgs) for k, v in times.items()}
    macs_dense = sum(2 * conv_macs(vd, *s.shape[-2:]) for per in scaled for s in per) / len(imgs)
    macs_crops = 3 * 50 * conv_macs(vd, cfg.crop, cfg.crop)
    return {
        "images": len(imgs),
        "scales_px": qs,
        "seconds_per_image": per_img,
        "ratio": paired_ratio(times, "multicrop_150", "dense_3scale_flip"),
        "gmacs_per_image": {"dense_3scale_flip": macs_dense / 1e9, "multicrop_150": macs_crops / 1e9},
        "precision": "bf16" if rt.bf16 else "fp32",
        "note": "evaluation.core's dense_probs and multicrop_probs, as verydeep eval runs them",
    }
