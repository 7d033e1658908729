"""Choosing the merge settings and test scales on held-out photographs, never on the reported split.

The paper fixed its merging (OverFeat's) and reported on ILSVRC val; on a small set the choice
matters, and choosing it on the split one reports is optimistic. ``tune`` runs every net densely
once per photograph of a tuning split (e.g. ``train[80%:]``, with the nets trained on
``train[:80%]``), then scores a grid of settings from those passes (merging is cheap, the nets
are not): closeness measure and threshold, coordinate averaging, test scales, flips. Rows come
back sorted by top-1 then top-k error, and the best row as ``localize eval`` flags.

Example:
    >>> from verydeep.localization.tune import candidates
    >>> grid = candidates([[384], [256, 384]], flips=[False])
    >>> len(grid), grid[0].flags()
    (24, '--scales 384 --measure iou --threshold 0.3 --average count')
    >>> dense_config(grid[-1].flags()) == DenseConfig([256, 384], False, merge=grid[-1].merge)
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..data.images import BadImageError, load_image
from ..data.sources import resolve_split
from ..data.voc import image_path
from .merge import MergeConfig
from .metrics import loc_error
from .protocol import DenseConfig, Evidence, collect_evidence, merge_evidence

THRESHOLDS = {"iou": [0.3, 0.5, 0.7], "centre": [0.5, 1.0, 2.0]}  # IoU >= t; centre distance <= t
AVERAGES = ["count", "score"]


@dataclass
class Candidate:
    scales: list[int]
    flip: bool
    merge: MergeConfig
    own_scales: bool = False  # every box net has its own @Q: no --scales to choose or print

    def flags(self) -> str:
        m = self.merge
        text = "" if self.own_scales else f"--scales {','.join(map(str, self.scales))} "
        text += f"--measure {m.measure} --threshold {m.threshold} --average {m.average}"
        return text + (" --flip" if self.flip else "")


def dense_config(flags: str, default_scales: list[int] | None = None) -> DenseConfig:
    """The ``DenseConfig`` a row's ``flags`` stand for (``Candidate.flags`` read back); scales
    absent from the flags (every net has its own) are ``default_scales`` or 384."""
    words = flags.split()
    value = lambda name, default: words[words.index(name) + 1] if name in words else default  # noqa: E731
    scales = [int(q) for q in value("--scales", ",".join(map(str, default_scales or [384]))).split(",")]
    merge = MergeConfig(
        value("--measure", "iou"), float(value("--threshold", 0.5)), value("--average", "count")
    )
    return DenseConfig(scales, "--flip" in words, 5, "class", merge)


def candidates(scale_sets: list[list[int]], flips: list[bool], own_scales: bool = False) -> list[Candidate]:
    """The grid: scale sets x flips x measures x thresholds x averages."""
    return [
        Candidate(list(scales), flip, MergeConfig(measure, t, average), own_scales)
        for scales in scale_sets
        for flip in flips
        for measure, ts in THRESHOLDS.items()
        for t in ts
        for average in AVERAGES
    ]


def _keys(ev: Evidence, cand: Candidate, own_scales: list[bool]) -> list:
    """The passes a candidate uses: its scales (nets with their own scales keep theirs), its flip."""
    return [k for k in ev.passes if (own_scales[k[0]] or k[1] in cand.scales) and (cand.flip or not k[2])]


def score_grid(
    evidence: dict[str, Evidence],
    anns: list,
    classes: list[str],
    grid: list[Candidate],
    own_scales: list[bool],
) -> list[dict]:
    """Top-1 and top-k localisation error of every candidate, best first."""
    k = min(5, len(classes))
    rows = []
    for cand in grid:
        cfg = DenseConfig(cand.scales, cand.flip, k, "class", cand.merge)
        preds = {i: merge_evidence(ev, cfg, _keys(ev, cand, own_scales)) for i, ev in evidence.items()}
        errs = {f"top{j}": loc_error(preds, anns, classes, j) for j in sorted({1, k})}
        rows.append({"flags": cand.flags(), **errs})
    return sorted(rows, key=lambda r: (r["top1"], r[f"top{k}"]))


def tune(
    root: str,
    split: str,
    locs: list,
    classifiers: list,
    classes: list[str],
    scale_sets: list[list[int]],
    flips: list[bool],
    progress=None,
) -> dict:
    """Dense passes over ``split`` once, then the whole grid scored from them.

    ``locs`` and ``classifiers`` are test-time ``Net``s (``api.load_locs`` / ``api.load_classifiers``).
    """
    t0 = time.process_time()
    anns = resolve_split("voc", root, split).annotations()
    all_scales = sorted({q for s in scale_sets for q in s})
    evidence, skipped = {}, []
    for i, ann in enumerate(anns):
        try:
            img = load_image(image_path(root, ann))
        except BadImageError:
            skipped.append(ann.image_id)
            continue
        evidence[ann.image_id] = collect_evidence(
            img, (ann.width, ann.height), locs, all_scales, any(flips), classifiers
        )
        if progress:
            progress(i, 0.0)
    own = [n.scales is not None for n in locs]
    rows = score_grid(evidence, anns, classes, candidates(scale_sets, flips, all(own)), own)
    return {
        "split": split,
        "images": len(evidence),
        "rows": rows,
        "best": rows[0],
        "skipped": skipped,
        "cpu_s": time.process_time() - t0,
    }
