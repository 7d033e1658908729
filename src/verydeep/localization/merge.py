"""Greedy box merging in the manner of Sermanet et al. (OverFeat, 2014), Section 4.3.

Repeatedly find the two closest boxes; if they are close enough, replace them by one box whose
coordinates are the average of theirs and whose score combines theirs; stop when no pair is
close. The paper (and OverFeat) leave the details open, so they are parameters here:

* ``measure="iou"``: closeness is the IoU; a pair is close when IoU >= ``threshold`` (0.5).
* ``measure="centre"``: closeness is the distance between the centres divided by the mean of the
  two boxes' (w + h) / 2; a pair is close when that is <= ``threshold``. (OverFeat's own score
  adds centre distance and intersection area, two terms with different units; both parts are
  kept here, one per measure.)
* ``average="count"``: the merged box is the mean of all boxes merged into it so far (so the
  result does not depend on merge order); ``"pair"``: the plain mean of the two boxes (OverFeat's
  literal wording); ``"score"``: mean weighted by the boxes' scores.
* ``score="sum"`` (OverFeat accumulates the confidences of merged boxes, so a location that many
  windows agree on ranks high) or ``"max"``.

Boxes of different classes are never merged (call once per class).

Example:
    >>> import torch
    >>> from verydeep.localization.merge import greedy_merge
    >>> b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    >>> boxes, scores, counts = greedy_merge(b, torch.tensor([1.0, 1.0, 0.5]))
    >>> boxes.tolist(), scores.tolist(), counts.tolist()
    ([[0.5, 0.5, 10.5, 10.5], [50.0, 50.0, 60.0, 60.0]], [2.0, 0.5], [2, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .boxes import box_iou, xyxy_to_cxcywh


@dataclass(frozen=True)
class MergeConfig:
    measure: str = "iou"  # iou | centre
    threshold: float = 0.5  # iou: merge while IoU >= threshold; centre: while distance <= threshold
    average: str = "count"  # count | pair | score
    score: str = "sum"  # sum | max

    def __post_init__(self) -> None:
        if self.measure not in ("iou", "centre"):
            raise ValueError(f"merge measure must be iou or centre, got {self.measure!r}")
        if self.average not in ("count", "pair", "score"):
            raise ValueError(f"merge average must be count, pair or score, got {self.average!r}")
        if self.score not in ("sum", "max"):
            raise ValueError(f"merge score must be sum or max, got {self.score!r}")
        hi = 1.0 if self.measure == "iou" else math.inf  # an IoU is in [0, 1]; a distance is not bounded
        if not 0 <= self.threshold <= hi:  # NaN fails it too
            raise ValueError(
                f"merge threshold for {self.measure} must be in [0, {hi:g}], got {self.threshold}"
            )


def closeness(b: torch.Tensor, measure: str) -> torch.Tensor:
    """(N, N) closeness of xyxy boxes, larger = closer; the diagonal is -inf."""
    if measure == "iou":
        c = box_iou(b, b)
    else:
        cw = xyxy_to_cxcywh(b)
        dist = torch.cdist(cw[:, :2], cw[:, :2])
        size = (cw[:, 2] + cw[:, 3]) / 2
        c = -dist / ((size[:, None] + size[None, :]) / 2).clamp_min(1e-6)
    return c.fill_diagonal_(float("-inf"))


def greedy_merge(
    boxes: torch.Tensor, scores: torch.Tensor, cfg: MergeConfig = MergeConfig()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge xyxy ``boxes`` (N, 4) with ``scores`` (N,); returns (boxes, scores, counts) by score."""
    boxes, scores = boxes.double().clone(), scores.double().clone()
    counts = torch.ones(len(boxes), dtype=torch.long)
    limit = cfg.threshold if cfg.measure == "iou" else -cfg.threshold
    while len(boxes) > 1:
        c = closeness(boxes, cfg.measure)
        best = int(torch.argmax(c))
        i, j = divmod(best, len(boxes))
        if c[i, j] < limit:
            break
        if cfg.average == "count":
            wi, wj = counts[i].double(), counts[j].double()
        elif cfg.average == "score":
            wi, wj = scores[i].clamp_min(1e-12), scores[j].clamp_min(1e-12)
        else:
            wi = wj = torch.tensor(1.0, dtype=torch.float64)
        merged = (boxes[i] * wi + boxes[j] * wj) / (wi + wj)
        score = scores[i] + scores[j] if cfg.score == "sum" else torch.maximum(scores[i], scores[j])
        keep = torch.ones(len(boxes), dtype=torch.bool)
        keep[j] = False
        boxes[i], scores[i], counts[i] = merged, score, counts[i] + counts[j]
        boxes, scores, counts = boxes[keep], scores[keep], counts[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    return boxes[order].float(), scores[order].float(), counts[order]
