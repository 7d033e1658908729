"""Feature extraction over a folder (issue 19, item 7): images/s of ``describe_paths``, the
function ``verydeep features`` runs, with photos bucketed by the 32-px windows the dense net sees
(``--dense-align centre``) against exact-size buckets (``topleft``: photos of different sizes
never share a batch). Decoding runs in the same process, so images/s is the whole cost.

Example:
    >>> from verydeep.bench.features_bench import VARIANTS
    >>> sorted(VARIANTS)
    ['exact_sizes', 'window_buckets']
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..features import DescriptorConfig, describe_paths
from .config import BenchConfig
from .eval_bench import PREP, photos
from .nets import build_pair
from .timing import interleaved, median, paired_ratio

VARIANTS = {"exact_sizes": "topleft", "window_buckets": "centre"}


def bench_features(cfg: BenchConfig, device: torch.device, root: Path, progress=None) -> dict:
    """Images/s of FC7 descriptors (one scale, flip averaged) of real photographs of mixed sizes."""
    _, vd = build_pair(cfg.arch, **cfg.model_kwargs)
    vd = vd.to(device).eval()
    paths = photos(root, cfg.data_images)
    fns = {
        name: (lambda a=align: describe_paths(vd, PREP, paths, DescriptorConfig(scales=(384.0,), align=a)))
        for name, align in VARIANTS.items()
    }
    times = interleaved(fns, rounds=cfg.rounds, warmup=0, device=device, progress=progress)
    return {
        "images": len(paths),
        "images_per_s": {k: len(paths) / median(v) for k, v in times.items()},
        "speedup": paired_ratio(times, "exact_sizes", "window_buckets"),
        "note": "describe_paths at Q=384 (paper units), flip averaged, decoding included, one process",
    }
