"""Photographs with boxes held in memory at one scale, and random training crops with targets.

Every image is decoded once and rescaled so its smallest side is S pixels; its boxes go through
the same rescale. A training crop is then a random ``crop x crop`` window plus an optional
flip, and its boxes go through ``boxes.scale_crop_flip_boxes``, so images and boxes cannot
disagree. Each crop gets one regression target (the paper does not say which object a crop
with several objects should predict): ``target="largest"`` picks the object with the largest
area visible in the crop, ``"random"`` a random visible object. Targets are not clipped to the
crop: a window that sees half an animal learns to predict the whole animal, which is what the
dense application needs. A crop that sees no object has ``valid = False`` (no box loss).

Example:
    >>> import torch
    >>> from verydeep.localization.data import ScaledSet, sample_crops
    >>> img = torch.zeros(3, 40, 60, dtype=torch.uint8)
    >>> ds = ScaledSet([img], [torch.tensor([[10.0, 5.0, 50.0, 35.0]])], [torch.tensor([1])], [1.0], ["x"])
    >>> b = sample_crops(ds, torch.tensor([0]), crop=40, generator=torch.Generator().manual_seed(0))
    >>> b.images.shape, b.labels.tolist(), b.valid.tolist()
    (torch.Size([1, 3, 40, 40]), [1], [True])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from ..data.images import BadImageError, load_image
from ..data.transforms import rescale_smallest
from ..data.voc import VocAnnotation, image_path
from .boxes import scale_crop_flip_boxes, visible_area, xyxy_to_cxcywh


@dataclass
class ScaledSet:
    images: list[torch.Tensor]  # uint8 (3, h, w), smallest side S
    boxes: list[torch.Tensor]  # (K, 4) xyxy in the rescaled image's pixels
    labels: list[torch.Tensor]  # (K,) class indices
    factors: list[float]  # rescaled size / original size
    ids: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (W, H) of the photographs
    skipped: list[str] = field(default_factory=list)  # images that could not be decoded

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class CropBatch:
    images: torch.Tensor  # uint8 (N, 3, crop, crop)
    targets: torch.Tensor  # (N, 4) cx, cy, w, h divided by the crop size
    labels: torch.Tensor  # (N,) class of the target object
    valid: torch.Tensor  # (N,) bool: an object is visible in the crop


def load_scaled(
    root: str | Path,
    anns: list[VocAnnotation],
    side: int,
    classes: list[str],
    difficult: bool = False,
    on_bad_image: str = "skip",
) -> ScaledSet:
    """Decode every image of ``anns``, rescale to smallest side ``side``; boxes follow.

    Undecodable images (critters-voc has one truncated JPEG) are skipped with a warning and
    listed in ``skipped``, or raise with ``on_bad_image="fail"``.
    """
    out = ScaledSet([], [], [], [], [])
    for ann in anns:
        path = image_path(root, ann)
        with Image.open(path) as probe:  # header only: the true size (decoding may shrink it)
            true_size = probe.size
        if true_size != (ann.width, ann.height):
            raise ValueError(
                f"{path}: size {true_size} differs from its annotation's {ann.width}x{ann.height}"
            )
        try:
            img = load_image(path, min_side=side)
        except BadImageError as e:
            if on_bad_image == "fail":
                raise
            warnings.warn(f"skipped: {e}", stacklevel=2)
            out.skipped.append(ann.image_id)
            continue
        f = side / min(ann.width, ann.height)
        img = rescale_smallest(img, side)
        out.images.append(TF.pil_to_tensor(img))
        out.boxes.append(ann.boxes(classes, difficult) * f)
        out.labels.append(ann.labels(classes, difficult))
        out.factors.append(f)
        out.ids.append(ann.image_id)
        out.sizes.append((ann.width, ann.height))
    return out


def _pick(vis: torch.Tensor, rule: str, generator: torch.Generator | None) -> int:
    if rule == "largest":
        return int(torch.argmax(vis))
    visible = torch.nonzero(vis > 0).flatten()
    return int(visible[torch.randint(len(visible), (1,), generator=generator)])


def sample_crops(
    ds: ScaledSet,
    idx: torch.Tensor,
    crop: int,
    flip: bool = True,
    target: str = "largest",
    generator: torch.Generator | None = None,
) -> CropBatch:
    """One random crop (and flip) of each image ``idx``, with its regression target."""
    imgs, targets, labels, valid = [], [], [], []
    for i in idx.tolist():
        img, boxes = ds.images[i], ds.boxes[i]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - crop + 1, (1,), generator=generator))
        left = int(torch.randint(w - crop + 1, (1,), generator=generator))
        flipped = flip and bool(torch.rand(1, generator=generator) < 0.5)
        patch = img[:, top : top + crop, left : left + crop]
        imgs.append(patch.flip(-1) if flipped else patch)
        b = scale_crop_flip_boxes(boxes, 1.0, left, top, crop, flipped)
        vis = visible_area(b, crop, crop)
        ok = len(b) > 0 and bool(vis.max() > 0)
        k = _pick(vis, target, generator) if ok else 0
        targets.append(xyxy_to_cxcywh(b[k]) / crop if ok else torch.zeros(4))
        labels.append(int(ds.labels[i][k]) if len(b) else 0)
        valid.append(ok)
    return CropBatch(torch.stack(imgs), torch.stack(targets), torch.tensor(labels), torch.tensor(valid))


def centre_crop(img: torch.Tensor, crop: int) -> tuple[torch.Tensor, int, int]:
    """The centre ``crop x crop`` window of a (3, h, w) image and its (left, top)."""
    h, w = img.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return img[:, top : top + crop, left : left + crop], left, top
