"""What the ``verydeep localize`` commands do, as functions (files are read here, never written).

Example:
    >>> from verydeep.localization.api import parse_scales
    >>> parse_scales("256,384")
    [256, 384]
    >>> parse_loc("runs/s256.safetensors@256")
    ('runs/s256.safetensors', [256])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..config import pixels
from ..data.images import BadImageError, file_problem, load_image
from ..data.sources import resolve_split
from ..data.voc import VocAnnotation, image_path, voc_classes
from ..evaluation.protocol import load_classifiers as classifier_checkpoints
from ..evaluation.runner import check_scales
from ..io.checkpoint import Meta, box_head, check_distinct, load_model
from ..models.vgg import VGG
from ..numerics import FP32, Numerics
from .data import load_scaled
from .metrics import baseline_guesses, gt_labels, loc_error, mean_training_box
from .net import LocTrainConfig, make_loc_net, train_localizer
from .protocol import DenseConfig, Guess, Net, centre_crop_guesses, localize_image
from .tune import tune

Progress = Callable[[int, float], None] | None


DEFAULT_SCALES = "384"  # the box nets' training S: the paper's single-scale test
DEFAULT_SCALE_SETS = [[384], [256, 384]]  # what tune tries unless told


def step_bar(total: int, desc: str, show: bool) -> Callable[[int, float], None]:
    """A progress callback whose bar appears at the first step: an input refused before any work
    prints its one-line error alone. ``show=False`` (``--no-progress``): a callback that does nothing."""
    if not show:
        return lambda _i, _loss: None
    from tqdm import tqdm

    bars: list = []

    def step(_i: int, loss: float) -> None:
        if not bars:
            bars.append(tqdm(total=total or None, desc=desc, leave=False))
        bars[0].update(1)
        if loss:
            bars[0].set_postfix(loss=f"{loss:.4f}")

    return step


def parse_scales(text: str) -> list[int]:
    """Comma-separated integer test scales Q in paper units: at least one, each in [224, 4096]."""
    try:
        scales = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"scales must be comma-separated integers, got {text!r}") from None
    check_scales(scales)
    return scales


def parse_loc(spec: str) -> tuple[str, list[int] | None]:
    """``PATH`` or ``PATH@Q1,Q2``: a localisation net and, optionally, its own test scales."""
    path, sep, scales = spec.rpartition("@")
    return (path, parse_scales(scales)) if sep else (spec, None)


def own_scales(loc_specs: list[str]) -> bool:
    """Every box net has its own ``@Q`` scales (shared ones would change nothing)."""
    return all(parse_loc(spec)[1] is not None for spec in loc_specs)


def dense_scales(loc_specs: list[str], scales: str | None) -> list[int]:
    """The shared test scales Q of ``--scales`` (384 unless given); refused when given and every
    box net has its own @Q, which it would not change."""
    if scales is not None and own_scales(loc_specs):
        raise ValueError("--scales has no effect: every --loc has its own @Q scales")
    return parse_scales(DEFAULT_SCALES if scales is None else scales)


def load_locs(specs: list[str]) -> list[tuple[Net, Meta]]:
    """Localisation nets from ``PATH[@Q1,Q2]`` specs."""
    out, parsed = [], [parse_loc(spec) for spec in specs]  # every spec parsed before any load
    check_distinct([path for path, _ in parsed])
    for path, scales in parsed:
        net, meta = load_net(path)
        if not net.head:
            raise ValueError(f"{path} is not a localisation net (train one with `localize train`)")
        net.scales = scales
        out.append((net, meta))
    return out


def load_net(path: str) -> tuple[Net, Meta]:
    """A checkpoint as a test-time ``Net`` (head read from a localisation net's metadata)."""
    model, meta = load_model(path)
    head = box_head(meta)
    if not head:
        return Net(model.eval(), meta.prep), meta
    box_size = meta.config["localization"].get("box_size", "linear")
    return Net(model.eval(), meta.prep, head, box_size=box_size), meta


def load_classifiers(paths: list[str]) -> tuple[list[Net], list[str]]:
    """The classification nets that score the boxes (several: their posteriors are averaged) and
    their class names, which must agree."""
    if not paths:
        raise ValueError("no classification net given (--cls)")
    loaded = classifier_checkpoints(paths, "cpu")  # no net named twice, no box net
    classes = loaded[0][1].classes
    for path, (_, meta) in zip(paths, loaded, strict=True):
        if meta.classes != classes:
            raise ValueError(f"{path}'s classes {meta.classes} are not {paths[0]}'s {classes}")
    return [Net(model.eval(), meta.prep) for model, meta in loaded], classes


def check_classes(anns: list, classes: list[str], where: str, locs: list[tuple[Net, Meta]] = ()) -> None:
    """Every object class of the split is one the classifier scores, and every per-class (PCR)
    box net has the classifier's classes in its order: an unknown class has no score to read, and
    a PCR net of another order would read another class's box."""
    unknown = sorted(set(voc_classes(anns)) - set(classes))
    if unknown:
        raise ValueError(f"{where} has classes the classifier lacks: {', '.join(unknown)}")
    for net, meta in locs:
        if net.head == "pcr" and meta.classes != classes:
            raise ValueError(
                f"a per-class box net's classes {', '.join(meta.classes)} are not the classifier's "
                f"{', '.join(classes)} (same names, same order)"
            )


def fit_localizer(
    root: str,
    cls_path: str,
    cfg: LocTrainConfig,
    progress: Progress = None,
    split: str = "train",
    numerics: Numerics = FP32,
) -> tuple[VGG, Meta, dict]:
    """Initialise a box-regression net from a classifier checkpoint and train it on a split of
    ``root`` (in ``numerics``' arithmetic; a NaN/inf loss stops with ``NonFiniteLossError``)."""
    cls, cls_meta = load_net(cls_path)
    if cls.head:
        raise ValueError(f"{cls_path} is a localisation net; pass a classification checkpoint")
    anns = _boxes(root, split)
    classes = cls_meta.classes or voc_classes(anns)
    check_classes(anns, classes, f"{root} ({split})")
    ds = load_scaled(root, anns, pixels(cfg.scale, cls.model.crop_size), classes)
    net = make_loc_net(cls.model, cfg.head, cfg.last_std)
    hist = train_localizer(net, ds, cls.prep, cfg, progress, numerics)
    meta = Meta(
        preprocess=cls_meta.preprocess,
        classes=classes,
        train_scale=[cfg.scale],
        config={
            "localization": cfg.to_dict(),
            "init_from": str(cls_path),
            "dataset": str(root),
            "split": split,
        },
        source="verydeep.localization",
    )
    return net, meta, hist


def evaluate_boxes(
    root: str,
    split: str,
    loc_paths: list[str],
    cls_paths: list[str],
    cfg: DenseConfig,
    progress: Progress = None,
    train_split: str = "train",
) -> dict:
    """Every protocol of the report on one split: centre crop, dense + merging, baselines
    (the mean box is that of ``train_split``); ``cls_paths``: the classifiers scoring the boxes."""
    t0 = time.process_time()
    anns, train = _boxes(root, split), _boxes(root, train_split)
    locs = load_locs(loc_paths)  # first: a malformed PATH@Q is refused before any file is read
    classifiers, classes = load_classifiers(cls_paths)
    check_classes(anns, classes, f"{root} ({split})", locs)
    k = min(5, len(classes))
    report: dict = {"split": split, "images": len(anns), "classes": classes, "k": k, "centre": {}}
    for path, (loc, meta) in zip(loc_paths, locs, strict=True):
        ds = load_scaled(root, anns, pixels(meta.train_scale[0], loc.model.crop_size), classes)
        report["centre"][path] = loc_error(centre_crop_guesses(ds, loc), anns, classes, 1)
    preds, skipped = {}, []
    side = max(pixels(q, n.model.crop_size) for n, _ in locs for q in (n.scales or cfg.scales) + cfg.scales)
    for i, ann in enumerate(anns):
        try:
            img = load_image(image_path(root, ann), min_side=side)
        except BadImageError:
            skipped.append(ann.image_id)
            continue
        preds[ann.image_id] = localize_image(
            img, (ann.width, ann.height), [n for n, _ in locs], classifiers, cfg
        )
        if progress:
            progress(i, 0.0)
    top1 = {i: g[0].label for i, g in preds.items() if g}
    report["dense"] = {f"top{j}": loc_error(preds, anns, classes, j) for j in sorted({1, k})}
    truth = gt_labels(anns, classes)
    report["classification_top1_error"] = sum(top1.get(a, -1) != c for a, c in truth.items()) / len(truth)
    mean_box = mean_training_box(train)
    report["baselines"] = {
        f"{kind}/{lab}": loc_error(baseline_guesses(anns, kind, labels, mean_box), anns, classes, 1)
        for kind in ("whole", "mean")
        for lab, labels in (("gt_class", truth), ("classifier_class", top1))
    }
    report["skipped"], report["cpu_s"] = skipped, time.process_time() - t0
    return report


def tune_merging(
    root: str,
    split: str,
    loc_paths: list[str],
    cls_paths: list[str],
    scale_sets: list[list[int]] | None,
    flips: list[bool],
    progress: Progress = None,
) -> dict:
    """The merge-settings grid of ``tune.py`` scored on ``split`` (hold it out of training);
    ``scale_sets`` None: 384 and 256,384, or none to choose when every box net has its own @Q."""
    own = own_scales(loc_paths)
    if own and scale_sets is not None:  # the grid would list scales that no net runs at
        raise ValueError("--scale-sets has no effect: every --loc has its own @Q scales")
    scale_sets = [[384]] if own else DEFAULT_SCALE_SETS if scale_sets is None else scale_sets
    if not scale_sets or not flips:  # checked before the dense pass over the split, not after it
        raise ValueError("tune: give at least one scale set (e.g. 384;256,384) and one flip setting")
    for qs in scale_sets:
        check_scales(qs)
    locs = load_locs(loc_paths)  # first: a malformed PATH@Q before any file
    classifiers, classes = load_classifiers(cls_paths)
    check_classes(_boxes(root, split), classes, f"{root} ({split})", locs)
    return tune(root, split, [n for n, _ in locs], classifiers, classes, scale_sets, flips, progress)


def predict(
    image: str, loc_paths: list[str], cls_paths: list[str], cfg: DenseConfig
) -> tuple[Image.Image, list[Guess], list[str]]:
    """The full protocol on one photograph: (the photograph, ranked guesses, class names)."""
    if not Path(image).is_file():
        raise ValueError(f"{image}: {file_problem(Path(image))}")
    img = load_image(image)
    locs = load_locs(loc_paths)  # first: a malformed PATH@Q before any file
    classifiers, classes = load_classifiers(cls_paths)
    check_classes([], classes, image, locs)
    return img, localize_image(img, img.size, [n for n, _ in locs], classifiers, cfg), classes


def _boxes(root: str | Path, split: str) -> list[VocAnnotation]:
    """The annotations of a VOC split, through the one data-set resolver (its checks and errors)."""
    return resolve_split("voc", root, split).annotations()
