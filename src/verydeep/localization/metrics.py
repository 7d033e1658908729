"""Localisation error (ILSVRC criterion) and the two trivial baselines.

A guess (class, box) is correct for a photograph when some ground-truth object has its class
and an IoU > 0.5 with it (difficult objects count, as ILSVRC has none). The top-k error is the
fraction of photographs none of whose first k guesses is correct; photographs without guesses
(e.g. undecodable files) are errors.

Baselines: ``whole`` guesses the whole photograph; ``mean`` guesses the mean training box,
(cx/W, cy/H, w/W, h/H) averaged over the training objects and scaled to each photograph.

Example:
    >>> from verydeep.data.voc import VocAnnotation, VocObject
    >>> from verydeep.localization.protocol import Guess
    >>> from verydeep.localization.metrics import loc_error
    >>> ann = VocAnnotation("a", "a.jpg", 100, 50, objects=[VocObject("cat", (0, 0, 60, 50))])
    >>> loc_error({"a": [Guess(0, (0, 0, 100, 50), 1.0)]}, [ann], ["cat"], k=1)  # IoU 0.6
    0.0
    >>> loc_error({"a": [Guess(0, (0, 0, 20, 50), 1.0)]}, [ann], ["cat"], k=1)  # IoU 1/3
    1.0
"""

from __future__ import annotations

import torch

from ..data.voc import VocAnnotation
from .boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from .protocol import Guess

IOU_THRESHOLD = 0.5


def is_correct(g: Guess, ann: VocAnnotation, classes: list[str], iou: float = IOU_THRESHOLD) -> bool:
    gt = ann.boxes([classes[g.label]])
    if len(gt) == 0:
        return False
    return bool(box_iou(torch.tensor([g.box], dtype=torch.float32), gt).max() > iou)


def loc_error(
    preds: dict[str, list[Guess]], anns: list[VocAnnotation], classes: list[str], k: int = 1
) -> float:
    """Top-k localisation error over ``anns`` (a fraction in [0, 1])."""
    wrong = 0
    for ann in anns:
        guesses = preds.get(ann.image_id, [])[:k]
        wrong += not any(is_correct(g, ann, classes) for g in guesses)
    return wrong / max(1, len(anns))


def mean_training_box(anns: list[VocAnnotation]) -> tuple[float, float, float, float]:
    """Mean (cx/W, cy/H, w/W, h/H) over all objects of ``anns``."""
    rows = [
        xyxy_to_cxcywh(torch.tensor(o.box)) / torch.tensor([a.width, a.height] * 2)
        for a in anns
        for o in a.objects
    ]
    return tuple(torch.stack(rows).mean(0).tolist())


def baseline_guesses(
    anns: list[VocAnnotation], kind: str, labels: dict[str, int], mean_box: tuple[float, ...] = ()
) -> dict[str, list[Guess]]:
    """One guess per photograph: the whole image (``kind="whole"``) or ``mean_box`` ("mean"),
    with the class ``labels[image_id]`` (ground truth, or the classifier's top-1)."""
    if kind not in ("whole", "mean"):
        raise ValueError(f"baseline must be whole or mean, got {kind!r}")
    out = {}
    for a in anns:
        if a.image_id not in labels:
            continue
        if kind == "whole":
            box = (0.0, 0.0, float(a.width), float(a.height))
        else:
            scaled = torch.tensor(mean_box) * torch.tensor([a.width, a.height] * 2)
            box = tuple(cxcywh_to_xyxy(scaled).tolist())
        out[a.image_id] = [Guess(labels[a.image_id], box, 1.0)]
    return out


def gt_labels(anns: list[VocAnnotation], classes: list[str]) -> dict[str, int]:
    """Each photograph's ground-truth class (that of its first object)."""
    return {a.image_id: classes.index(a.objects[0].name) for a in anns if a.objects}
