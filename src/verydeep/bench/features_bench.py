"""Feature extraction over a folder: images/s of ``describe_paths``, the
function ``verydeep features`` runs, with photos bucketed by the 32-px windows the dense net sees
(``--dense-align centre``: the border pixels no window sees are cut, so the descriptors are those
of the uncut photo) against exact-size buckets (``topleft``: photos of different sizes never
share a batch), both in this hardware's fast mode (``--precision auto``: bf16 where it is native,
Winograd's convolutions on other CPUs). Decoding runs as
``verydeep features`` runs it by default (on a CPU in the same process), so images/s is the
whole cost; GMAC/s is the net's arithmetic (conv layers, FC6, FC7 over every window, flips) over
that time, to set beside the matmul limit of the inference part.

Example:
    >>> from verydeep.bench.features_bench import VARIANTS
    >>> sorted(VARIANTS)
    ['exact_sizes', 'window_buckets']
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..data.images import header_orientation
from ..data.transforms import rescaled_size
from ..evaluation.core import window_trim
from ..evaluation.precision import for_precision
from ..features import DescriptorConfig, describe_paths
from ..models.summary import conv_macs
from ..numerics import resolve
from .config import BenchConfig
from .eval_bench import photos
from .nets import PREP, build_pair
from .timing import interleaved, median, paired_ratio

VARIANTS = {"exact_sizes": "topleft", "window_buckets": "centre"}  # name: dense alignment
Q = 384.0  # paper units: the descriptor scale of the paper's VOC/Caltech single-scale results


def _gmacs_per_image(net, paths: list[Path], side: int) -> float:
    """Mean GMACs of one descriptor (image and its flip) at the trimmed sizes the net sees; the
    sizes come from the file headers (EXIF turns included), nothing is decoded."""
    total = 0
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
        if header_orientation(p) in (5, 6, 7, 8):  # a quarter turn swaps the sides
            w, h = h, w
        shape = rescaled_size(h, w, side, round_to=1)  # as rescale_to_sides computes it
        trimmed = window_trim(torch.empty(0, *shape), net.crop_size, 32, "centre").shape[-2:]
        total += 2 * conv_macs(net, *trimmed, fc_layers=2)
    return total / len(paths) / 1e9


def bench_features(cfg: BenchConfig, device: torch.device, root: Path, progress=None) -> dict:
    """Images/s of FC7 descriptors (one scale, flip averaged) of real photographs of mixed sizes."""
    _, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    vd = vd.to(device).eval()
    paths = photos(root, cfg.features_images)
    # both ways in this hardware's fast mode (`--precision auto`: bf16 where native, else
    # Winograd on a CPU), the mode a user extracting a whole dataset picks; --all-modes: also in
    # fp32 (a third of the bench's time on a slow CPU went to that pair)
    fast = resolve("auto", device).mode
    precisions = [fast] + (["fp32"] if cfg.all_modes and fast != "fp32" else [])
    nets = {prec: for_precision(vd, PREP, prec)[0] for prec in precisions}  # each copy made once

    def run(align: str, precision: str):
        return lambda: describe_paths(
            nets[precision], PREP, paths, DescriptorConfig(scales=(Q,), align=align, precision=precision)
        )

    fns = {
        k + ("" if prec == fast else f"_{prec}"): run(align, prec)
        for prec in precisions
        for k, align in VARIANTS.items()
    }
    names = list(fns)
    times = interleaved(fns, rounds=cfg.rounds, warmup=0, device=device, progress=progress)
    gmacs = _gmacs_per_image(vd, paths, DescriptorConfig(scales=(Q,)).sides(vd.crop_size)[0])
    rate = {k: len(paths) / median(v) for k, v in times.items()}
    return {
        "images": len(paths),
        "images_per_s": rate,
        "gmacs_per_image": gmacs,
        "gmac_per_s": {k: r * gmacs for k, r in rate.items()},
        "speedup": paired_ratio(times, "exact_sizes", "window_buckets"),
        "speedups": {k: paired_ratio(times, "exact_sizes", k) for k in names if k != "exact_sizes"},
        "precision": fast,
        "note": f"describe_paths at Q={Q:.0f} (paper units), flip averaged, decoding included",
    }
