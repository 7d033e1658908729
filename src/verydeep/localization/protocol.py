"""Testing the localisation nets: the centre-crop protocol (Table 8) and the full dense one.

Centre crop (Table 8): rescale to S, take the centre crop, read the box of the ground-truth
class (PCR) or the shared box (SCR), map it back to the photograph.

Dense (Appendix A): the localisation net runs fully-convolutionally over the image rescaled to
Q. Output position (i, j) of the box map sees the window of ``crop x crop`` input pixels whose
top-left corner is ``(stride * j, stride * i)``, stride 2^5 = 32 (the five pools); its 4 numbers
are (cx, cy, w, h) in that window divided by the crop size, exactly like a training crop, so
the box is ``(stride*j + cx*crop, stride*i + cy*crop, w*crop, h*crop)`` in the rescaled image,
then divided by the rescale factor Q/min(W, H). (The window is exact for FC6's inputs; the
zero padding a crop has at its border is real image in the dense form, the paper's known
difference between dense and crop evaluation.) The classification net, run densely at the same
Q, gives soft-max posteriors per position (resized bilinearly to the box map's grid if its map
differs); the image's class ranking is the soft-max of the spatially averaged score map (its
posteriors averaged over scales and flips). For each of the ``top_classes`` best classes every
box gets its position's posterior for that class as score; boxes of all scales, flips and nets
(each net at ``Net.scales`` if set) are pooled, clipped to the image and merged greedily
(``merge.py``). Guesses:
``rank="class"`` gives, per class in the classifier's order, its best merged box (so top-1 is
the classifier's class); ``rank="box"`` ranks all merged boxes of all those classes by score.

A guess is correct when its class is that of some ground-truth object and its IoU with one of
that class's boxes is > 0.5; an image is a top-k error when none of its first k guesses is.

Example:
    >>> import torch
    >>> from verydeep.localization.protocol import window_boxes
    >>> m = torch.tensor([0.5, 0.5, 1.0, 1.0]).view(4, 1, 1).expand(4, 1, 2).clone()
    >>> window_boxes(m, crop=64, stride=32)  # two windows, each box = its whole window
    tensor([[[ 0.,  0., 64., 64.]],
    <BLANKLINE>
            [[32.,  0., 96., 64.]]])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from ..config import pixels
from ..data.preprocess import Preprocess
from ..data.transforms import rescale_smallest
from ..evaluation.runner import check_scales
from ..models.vgg import VGG
from .boxes import clip_boxes, cxcywh_to_xyxy, flip_boxes
from .data import ScaledSet, centre_crop
from .merge import MergeConfig, greedy_merge
from .net import class_boxes, decode_boxes


@dataclass
class Net:
    """A net with what it needs at test time; ``head`` is scr/pcr for localisation nets."""

    model: VGG
    prep: Preprocess
    head: str = ""
    scales: list[int] | None = None  # this net's test scales Q (paper units); None: DenseConfig's
    box_size: str = "linear"  # how its outputs hold width and height (net.py, LocTrainConfig)


@dataclass
class DenseConfig:
    scales: list[int] = field(default_factory=lambda: [384])  # Q, paper units
    flip: bool = False  # also add the boxes of the mirrored image
    top_classes: int = 5
    rank: str = "class"  # class | box
    merge: MergeConfig = field(default_factory=MergeConfig)

    def __post_init__(self) -> None:
        if self.rank not in ("class", "box"):
            raise ValueError(f"rank must be class or box, got {self.rank!r}")
        check_scales(self.scales)
        if self.top_classes < 1:
            raise ValueError(f"top_classes must be >= 1, got {self.top_classes}")


@dataclass
class Guess:
    label: int
    box: tuple[float, float, float, float]  # xyxy in the photograph's pixels
    score: float


def stride_of(model: VGG) -> int:
    return 2 ** sum(isinstance(m, nn.MaxPool2d) for m in model.features)


def window_boxes(box_map: torch.Tensor, crop: int, stride: int, box_size: str = "linear") -> torch.Tensor:
    """(4K, h, w) map of box outputs -> (h*w, K, 4) xyxy boxes in input pixels."""
    k4, h, w = box_map.shape
    b = box_map.reshape(k4 // 4, 4, h, w).permute(2, 3, 0, 1).reshape(h * w, k4 // 4, 4)
    b = decode_boxes(b, box_size) * crop
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    origin = torch.stack([jj.flatten(), ii.flatten()], 1).float() * stride
    b[..., :2] += origin[:, None, :]
    return cxcywh_to_xyxy(b)


def _side_image(img: Image.Image, side: int, flip: bool) -> torch.Tensor:
    x = TF.pil_to_tensor(rescale_smallest(img, side))
    return x.flip(-1) if flip else x


@dataclass
class ClassMap:
    """One classifier's dense output at one Q (and flip): what scores the boxes."""

    posteriors: torch.Tensor  # (1, C, h, w): soft-max at each position of its own score map
    image: torch.Tensor  # (C,): soft-max of the spatially averaged score map


@torch.no_grad()
def classify_pass(img: Image.Image, q: int, flip: bool, classifiers: list[Net]) -> list[ClassMap]:
    """Each classifier run densely at Q (its own crop sets the pixels); one entry per classifier.

    It does not depend on the box nets, so ``collect_evidence`` runs it once per (Q, flip) and
    every box net at that Q reuses it.
    """
    out = []
    for cls in classifiers:
        x = _side_image(img, pixels(q, cls.model.crop_size), flip)
        score_map = cls.model.eval().dense_forward(cls.prep(x[None]))
        out.append(ClassMap(score_map.softmax(1), score_map.mean((2, 3))[0].softmax(0)))
    return out


@torch.no_grad()
def dense_pass(
    img: Image.Image, orig_min_side: int, q: int, flip: bool, loc: Net, classified: list[ClassMap]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One scale (and flip) of the full protocol, scored by ``classify_pass`` at the same Q, flip.

    Returns the boxes (P, K, 4) of all P positions in the photograph's pixels, each position's
    class posteriors (P, C) and the image-level posteriors (C,). With several classifiers both
    posteriors are their mean (a classification ensemble, as Table 6 averages soft-max outputs).
    """
    crop = loc.model.crop_size
    side = pixels(q, crop)
    x = _side_image(img, side, flip)
    box_map = loc.model.eval().dense_forward(loc.prep(x[None]))[0]
    h, w = box_map.shape[-2:]
    boxes = window_boxes(box_map, crop, stride_of(loc.model), loc.box_size)
    if flip:  # back to the unmirrored image
        boxes = flip_boxes(boxes, x.shape[-1])
    boxes = boxes * (orig_min_side / side)
    post, image_post = 0.0, 0.0
    for c in classified:
        p = c.posteriors
        if p.shape[-2:] != (h, w):  # another crop or stride: onto the box map's grid
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        post = post + p / len(classified)
        image_post = image_post + c.image / len(classified)
    return boxes, post[0].permute(1, 2, 0).reshape(h * w, -1), image_post


@dataclass
class Evidence:
    """Every dense pass of one photograph, kept so that merge settings can be tried cheaply."""

    size: tuple[int, int]  # (W, H) of the photograph
    passes: dict[tuple[int, int, bool], tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]
    # (net index, Q, flip) -> (head, boxes (P, K, 4), position posteriors (P, C), image posteriors (C,))


def collect_evidence(
    img: Image.Image,
    orig_size: tuple[int, int],
    locs: list[Net],
    scales: list[int],
    flip: bool,
    classifiers: list[Net],
) -> Evidence:
    """Dense passes of every net at its scales (``Net.scales``, else ``scales``), with flips.

    The classifiers run once per (Q, flip), however many box nets share that Q.
    """
    passes, classified = {}, {}
    for n, loc in enumerate(locs):  # the paper's fusion: each net at its own scales (Table 9)
        for q in loc.scales or scales:
            for f in (False, True) if flip else (False,):
                if (q, f) not in classified:
                    classified[(q, f)] = classify_pass(img, q, f, classifiers)
                passes[(n, q, f)] = (
                    loc.head,
                    *dense_pass(img, min(orig_size), q, f, loc, classified[(q, f)]),
                )
    return Evidence(orig_size, passes)


def merge_evidence(ev: Evidence, cfg: DenseConfig, keys: list | None = None) -> list[Guess]:
    """Rank classes and greedily merge their boxes over the passes ``keys`` (default: all)."""
    width, height = ev.size
    pooled = [ev.passes[k] for k in (keys if keys is not None else ev.passes)]
    ranking = torch.argsort(torch.stack([p[3] for p in pooled]).mean(0), descending=True, stable=True)
    guesses = []
    for c in ranking[: cfg.top_classes].tolist():
        b = torch.cat([bx[:, 0] if head == "scr" else bx[:, c] for head, bx, _, _ in pooled])
        s = torch.cat([post[:, c] for _, _, post, _ in pooled])
        merged, scores, _ = greedy_merge(clip_boxes(b, width, height), s, cfg.merge)
        n = 1 if cfg.rank == "class" else len(merged)
        guesses += [Guess(c, tuple(merged[i].tolist()), float(scores[i])) for i in range(n)]
    if cfg.rank == "box":
        guesses.sort(key=lambda g: -g.score)
    return guesses


def localize_image(
    img: Image.Image, orig_size: tuple[int, int], locs: list[Net], classifiers: list[Net], cfg: DenseConfig
) -> list[Guess]:
    """The full protocol on one photograph (``orig_size`` = its (W, H) before any decoding shrink)."""
    return merge_evidence(collect_evidence(img, orig_size, locs, cfg.scales, cfg.flip, classifiers), cfg)


@torch.no_grad()
def centre_crop_guesses(ds: ScaledSet, loc: Net) -> dict[str, list[Guess]]:
    """Table 8's protocol: the centre crop at S, the ground-truth class known (its first object)."""
    crop = loc.model.crop_size
    out = {}
    for i, img in enumerate(ds.images):
        patch, left, top = centre_crop(img, crop)
        label = int(ds.labels[i][0])
        pred = class_boxes(loc.model.eval()(loc.prep(patch[None])), torch.tensor([label]), loc.head)
        pred = decode_boxes(pred, loc.box_size)
        box = cxcywh_to_xyxy(pred[0] * crop) + torch.tensor([left, top, left, top])
        width, height = ds.sizes[i]
        box = clip_boxes(box / ds.factors[i], width, height)
        out[ds.ids[i]] = [Guess(label, tuple(box.tolist()), 1.0)]
    return out
