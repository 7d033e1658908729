"""What bf16 and int8 cost in accuracy, and what dense evaluation saves over 150 crops, on real photos.

Precision: a trained net (``--checkpoint``; random weights say nothing about agreement) runs in
fp32 and in each fast mode that this hardware has (bf16 where native, int8 on CPUs) through
``--precision``'s own code (``evaluation/precision.py``), on the user's photographs; we report top-1
agreement and the largest posterior difference, for centre crops and dense evaluation. A mode
below 99% agreement is not a default.

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
from ..data.images import find_images, load_image
from ..data.transforms import rescale_smallest
from ..evaluation.core import Runtime, crop_probs, dense_probs, match_channels, multicrop_probs, rescale
from ..evaluation.precision import CALIBRATION_IMAGES, for_precision, read_images, spread
from ..hardware import native_bf16
from ..io.checkpoint import load_model
from ..models.summary import conv_macs
from ..numerics import INT8, Numerics, resolve
from .config import BenchConfig
from .nets import PREP, build_pair
from .timing import interleaved, median, paired_ratio


def photos(root: Path, n: int) -> list[Path]:
    """``n`` photographs evenly spread over every image under ``root`` (class folders, a VOC
    tree, or a plain folder), sorted: an ImageFolder's classes each get their share."""
    return spread(find_images(root, what="photo folder"), n)


def precision_check(cfg: BenchConfig, device: torch.device, root: Path) -> dict:
    """Each fast mode against fp32, with the trained net ``cfg.checkpoint`` on photographs of
    ``root``: top-1 agreement and the largest posterior difference, for the centre crop and for
    dense evaluation at the net's single test scale. int8 calibrates on other photographs."""
    model, meta = load_model(cfg.checkpoint, device)
    model.eval()
    samples, classes = scan_image_folder(root)
    tested, calib, from_others = _tested_and_calibration(samples, cfg.precision_images)
    label_of = dict(samples)
    # the photos' own labels, where the net was trained on these classes: error rates too
    labels = torch.tensor([label_of[p] for p in tested]) if list(meta.classes) == list(classes) else None
    q = pixels(sum(meta.train_scale) / len(meta.train_scale), model.crop_size)
    xs = [match_channels(rescale(load_image(p), q)[None], model.in_channels) for p in tested]
    modes = (["bf16"] if native_bf16(device) or cfg.all_modes else []) + (
        ["winograd", *INT8] if device.type == "cpu" else []
    )
    ref, _ = _posteriors(model, xs, meta.prep, Runtime(device, Numerics("fp32", channels_last=True)))
    out: dict = {"checkpoint": str(cfg.checkpoint), "images": len(xs), "test_scale_px": q, "modes": {}}
    out["fp32_top1_err"] = _errors(ref, labels)
    for mode in modes:
        net, _ = for_precision(model, meta.prep, mode, read_images(calib) if mode in INT8 else ())
        got, rechecked = _posteriors(net, xs, meta.prep, Runtime(device, Numerics(mode, channels_last=True)))
        row: dict = {
            m: {
                "top1_agreement": (ref[m].argmax(1) == got[m].argmax(1)).float().mean().item(),
                "max_prob_diff": (ref[m] - got[m]).abs().max().item(),
            }
            for m in ref
        }
        row["top1_err"] = _errors(got, labels)
        if rechecked:
            row |= {"rechecked": rechecked, "check_margin": net.check_margin}
        row["can_be_default"] = all(row[m]["top1_agreement"] >= 0.99 for m in ref)
        out["modes"][mode] = row
    if device.type == "cpu":
        out["calibration_images"] = len(calib)
        out["calibrated_on"] = "other photos of the folder" if from_others else "the tested photos"
    return out


def _tested_and_calibration(samples: list, n: int) -> tuple[list[Path], list[Path], bool]:
    """Up to ``n`` photos to test, spread over the folder, and 32 others to calibrate int8 on
    (True); a folder too small for that calibrates on the tested photos' pixels (False), as
    ``--precision int8`` does on its inputs by default."""
    tested = spread([p for p, _ in samples], min(n, max(1, len(samples) - CALIBRATION_IMAGES)))
    seen = set(tested)
    others = [p for p, _ in samples if p not in seen]
    return tested, spread(others or tested, CALIBRATION_IMAGES), bool(others)


def _posteriors(net, xs: list[torch.Tensor], prep, rt: Runtime) -> tuple[dict, dict[str, float]]:
    """Centre-crop and dense posteriors of ``xs``, and for int8-checked the share of them it
    recomputed in fp32 (empty for the other modes)."""
    checks = getattr(net, "exact", None) is not None
    rechecked: dict[str, float] = {}
    with torch.inference_mode():
        crop = [net.crop_size] * 2
        centre = [crop_probs(net, TF.center_crop(x, crop), prep, flip=False, rt=rt) for x in xs]
        if checks:
            rechecked["centre"], net.checked, net.rechecked = net.rechecked / net.checked, 0, 0
        dense = [dense_probs(net, x, prep, rt=rt) for x in xs]
        if checks:
            rechecked["dense"] = net.rechecked / net.checked
    return {"centre": torch.cat(centre).cpu(), "dense": torch.cat(dense).cpu()}, rechecked


def _errors(post: dict[str, torch.Tensor], labels: torch.Tensor | None) -> dict[str, float] | None:
    if labels is None:
        return None
    return {m: (p.argmax(1) != labels).float().mean().item() for m, p in post.items()}


def bench_eval_cost(cfg: BenchConfig, device: torch.device, root: Path, progress=None) -> dict:
    """Seconds per photo: dense 3-scale + flip against 150-crop multi-crop, same fast mode."""
    _, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    vd = vd.to(device).eval().to(memory_format=torch.channels_last)
    # what `verydeep eval --precision auto` runs: its dense and multi-crop functions, and its
    # precision choice (bf16 weights where bf16 is native, else Winograd's convolutions on a CPU)
    numerics = resolve("auto", device, channels_last=True)
    vd, _ = for_precision(vd, PREP, numerics.mode)
    rt = Runtime(device, numerics)
    qs = [pixels(q, cfg.crop) for q in cfg.eval_scales]
    imgs = [load_image(p, min_side=max(qs)) for p in photos(root, cfg.eval_images)]
    scaled = [[TF.pil_to_tensor(rescale_smallest(im, q))[None] for q in qs] for im in imgs]

    def run(method, i):
        with torch.inference_mode():
            return [method(vd, per[i], PREP, rt=rt) for per in scaled]

    # one variant per method and scale, so the report can say where the ratio comes from: at a
    # small Q dense evaluation is one window or a few, at a large Q it is most of 150 crops' work
    methods = {"dense_3scale_flip": dense_probs, "multicrop_150": multicrop_probs}
    fns = {f"{k}@{q}": (lambda m=m, i=i: run(m, i)) for k, m in methods.items() for i, q in enumerate(qs)}
    # no warm-up (each call is long); rounds pair dense and crops moments apart for the ratio
    times = interleaved(fns, rounds=cfg.rounds, warmup=0, device=device, progress=progress)
    totals = {k: [sum(r) for r in zip(*(times[f"{k}@{q}"] for q in qs), strict=True)] for k in methods}
    per_img = {k: median(v) / len(imgs) for k, v in totals.items()}
    macs = {
        "dense_3scale_flip": [
            sum(2 * conv_macs(vd, *per[i].shape[-2:]) for per in scaled) / len(imgs) for i in range(len(qs))
        ],
        "multicrop_150": [50 * conv_macs(vd, cfg.crop, cfg.crop)] * len(qs),
    }
    by_scale = {
        str(q): {
            k: {
                "seconds_per_image": median(times[f"{k}@{q}"]) / len(imgs),
                "gmacs_per_image": macs[k][i] / 1e9,
            }
            for k in methods
        }
        | {"ratio": paired_ratio(times, f"multicrop_150@{q}", f"dense_3scale_flip@{q}")}
        for i, q in enumerate(qs)
    }
    return {
        "images": len(imgs),
        "scales_px": qs,
        "seconds_per_image": per_img,
        "ratio": paired_ratio(totals, "multicrop_150", "dense_3scale_flip"),
        "gmacs_per_image": {k: sum(v) / 1e9 for k, v in macs.items()},
        "by_scale": by_scale,
        "precision": numerics.mode,
        "note": "evaluation.core's dense_probs and multicrop_probs, as verydeep eval runs them",
    }
