"""Why a localisation net's top-1 guesses fail: wrong class, or a box of IoU <= 0.5, by object size.

For every photograph of a VOC split, the full protocol's top-1 guess (dense application, greedy
merging with the given flags) is compared with the ground-truth boxes of its class; photographs
are grouped by the area of their largest object as a fraction of the photograph, and for each
group the median ratio of the guessed box's area to that object's is printed (above 1: boxes too
large). Read-only: it writes nothing.

Usage:
    .venv/bin/python scripts/localization_errors.py --data ../shared/data/critters-voc --split val \
        --loc LOC.safetensors --cls CLS.safetensors --scales 256,384 --measure iou --threshold 0.3 \
        --average score --flip
"""

import argparse
import statistics
import sys

import torch

from verydeep.config import pixels
from verydeep.data.images import load_image
from verydeep.data.voc import image_path, load_voc
from verydeep.localization.api import load_classifiers, load_locs, parse_scales
from verydeep.localization.boxes import box_area, box_iou
from verydeep.localization.merge import MergeConfig
from verydeep.localization.protocol import DenseConfig, localize_image

GROUPS = [("< 20%", 0.0, 0.2), ("20-60%", 0.2, 0.6), ("> 60%", 0.6, 1.01)]


def area(b) -> float:
    """An xyxy box's area, by the library's own rule (inverted boxes: 0)."""
    return float(box_area(torch.tensor(b, dtype=torch.float64)))


def per_image(args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    """(image id, best IoU with a box of the guessed class or -1 if no such box, guessed area /
    largest object's area, largest object's area / photograph's) per photograph."""
    merge = MergeConfig(measure=args.measure, threshold=args.threshold, average=args.average)
    cfg = DenseConfig(
        scales=parse_scales(args.scales), flip=args.flip, top_classes=5, rank="class", merge=merge
    )
    classifiers, classes = load_classifiers(args.cls)
    locs = [n for n, _ in load_locs(args.loc)]
    side = max(pixels(q, n.model.crop_size) for n in locs for q in cfg.scales)  # as `localize eval`
    rows = []
    for ann in load_voc(args.data, args.split):
        img = load_image(image_path(args.data, ann), min_side=side)
        guess = localize_image(img, (ann.width, ann.height), locs, classifiers, cfg)[0]
        same = [o.box for o in ann.objects if o.name == classes[guess.label]]
        ious = [float(box_iou(torch.tensor([guess.box]), torch.tensor([b]))[0, 0]) for b in same]
        big = max((o.box for o in ann.objects), key=area)
        rows.append(
            (
                ann.image_id,
                max(ious, default=-1.0),
                area(guess.box) / area(big),
                area(big) / (ann.width * ann.height),
            )
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--loc", action="append", required=True)
    p.add_argument("--cls", action="append", required=True)
    p.add_argument("--scales", default="384")
    p.add_argument("--measure", default="iou", choices=["iou", "centre"])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--average", default="count", choices=["count", "pair", "score"])
    p.add_argument("--flip", action="store_true")
    args = p.parse_args()
    rows = per_image(args)
    wrong = sum(r[1] < 0 for r in rows)
    boxes = sum(0 <= r[1] <= 0.5 for r in rows)
    print(f"{len(rows)} photographs: top-1 error {100 * (wrong + boxes) / len(rows):.1f}%")
    print(f"  wrong class {wrong}; right class, IoU <= 0.5: {boxes}")
    for name, lo, hi in GROUPS:
        g = [r for r in rows if lo <= r[3] < hi]
        if g:
            ratio = statistics.median(r[2] for r in g)
            errs = sum(r[1] <= 0.5 for r in g)
            print(
                f"  largest object {name} of the photograph: {len(g)}, {errs} wrong, "
                f"median box area ratio {ratio:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
