"""Top-5 classes of image files, and a picture of the dense class score map.

Every checkpoint brings its own preprocessing (``meta.prep``), crop size and test scales, so
predictions use exactly what the net was trained with. Any photograph mode (greyscale, palette,
CMYK, alpha) is converted to RGB by ``load_image``.

Example:
    >>> import torch
    >>> from PIL import Image
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.checkpoint import Meta
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).eval()
    >>> img = Image.new("RGB", (50, 40), (200, 30, 30))
    >>> p = image_posteriors(net, Meta(classes=["x", "y", "z"]), img, "dense+multicrop")
    >>> p.shape, round(float(p.sum()), 4)
    (torch.Size([3]), 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..data.images import BadImageError, load_image
from ..io.checkpoint import Meta
from ..models.vgg import VGG
from ..numerics import INT8
from .core import (
    CPU,
    Runtime,
    centre_probs,
    dense_maps,
    dense_probs,
    match_channels,
    multicrop_probs,
    rescale,
    window_trim,
)
from .precision import for_precision, image_paths, read_images, spread
from .runner import EvalOptions, parse_methods, scales_for


def image_posteriors(
    model: VGG,
    meta: Meta,
    img: Image.Image,
    method: str = "dense",
    scales: str | list[float] | None = "multi",
    *,
    flip: bool = True,
    average: str = "scores",
    align: str = "centre",
    grid: int = 5,
    rt: Runtime = CPU,
) -> torch.Tensor:
    """Posteriors (classes,) of one RGB image, averaged over scales and then over base methods."""
    (method,) = parse_methods(method)
    _, q_px = scales_for(meta.train_scale, model.crop_size, scales)
    prep = meta.prep
    fns = {
        "dense": lambda x: dense_probs(model, x, prep, flip=flip, average=average, align=align, rt=rt),
        "multicrop": lambda x: multicrop_probs(model, x, prep, grid=grid, flip=flip, rt=rt),
        "centre": lambda x: centre_probs(model, x, prep, rt=rt),
    }
    xs = [match_channels(rescale(img, q), model.in_channels)[None] for q in q_px]
    with torch.inference_mode():
        per_base = [torch.stack([fns[b](x)[0] for x in xs]).mean(0) for b in method.split("+")]
    return torch.stack(per_base).mean(0).cpu()


def class_names(meta: Meta, n: int) -> list[str]:
    return list(meta.classes) if len(meta.classes) == n else [f"class {i}" for i in range(n)]


def predict(
    nets: Sequence[tuple[VGG, Meta]],
    paths: Sequence[str | Path],
    *,
    top: int = 5,
    opts: EvalOptions | None = None,
) -> list[dict]:
    """Top-``top`` (clipped to the classes) names and posteriors per image with one method of
    ``opts`` (default: the paper's dense multi-scale test); several nets are averaged as an
    ensemble. An unreadable file does not stop the rest: its entry holds ``error`` instead."""
    opts = opts or EvalOptions(progress=False)
    if len(opts.methods) != 1:
        raise ValueError(f"predict takes one method (a + combination is one), got {opts.methods}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    names = class_names(nets[0][1], nets[0][0].num_classes)
    for i, (m, meta) in enumerate(nets[1:], 2):
        other = class_names(meta, m.num_classes)
        if other != names:  # say where they differ: "not the same classes" alone says little
            raise ValueError(
                f"an ensemble needs nets with the same classes in the same order: {_diff(names, other, i)}"
            )
    numerics = opts.numerics()
    precision = numerics.mode
    if precision in INT8:
        calib = list(read_images(spread(image_paths(opts.calibrate) if opts.calibrate else paths), opts.exif))
        nets = [(for_precision(m, meta.prep, precision, calib)[0], meta) for m, meta in nets]
    rt = Runtime(opts.device, numerics)
    kw = dict(flip=opts.flip, average=opts.average, align=opts.dense_align, grid=opts.grid, rt=rt)
    out = []
    for path in paths:
        try:
            img = load_image(path, exif=opts.exif)
            with Image.open(path) as raw:
                mode = raw.mode
        except (BadImageError, OSError) as e:
            out.append({"path": str(path), "error": str(e)})
            continue
        post = [image_posteriors(m, meta, img, opts.methods[0], opts.scales, **kw) for m, meta in nets]
        probs = torch.stack(post).mean(0)
        p, i = probs.topk(min(top, len(probs)))
        best = [{"class": names[c], "index": int(c), "prob": float(v)} for v, c in zip(p, i, strict=True)]
        out.append({"path": str(path), "size": list(img.size), "mode": mode, "top": best, "probs": probs})
    return out


def score_map(
    model: VGG, meta: Meta, img: Image.Image, cls: int, q: int, rt: Runtime = CPU, align: str = "centre"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Flip-averaged dense score map (h, w) of class ``cls`` for ``img`` rescaled to ``q``, and
    the (top, left) pixel of the rescaled image where window (0, 0) starts: the same windows
    (``window_trim`` with ``align``) as the dense posteriors that ``predict`` prints."""
    x = match_channels(rescale(img, q), model.in_channels)[None]
    seen = window_trim(x, model.crop_size, 32, align)
    h, w = x.shape[-2:]
    offset = ((h - seen.shape[-2]) // 2, (w - seen.shape[-1]) // 2)
    with torch.inference_mode():
        return dense_maps(model, seen, meta.prep, flip=True, rt=rt)[0, cls].cpu(), offset


def _diff(first: list[str], other: list[str], i: int) -> str:
    """Where net ``i``'s class list first departs from net 1's."""
    j = next((j for j, (a, b) in enumerate(zip(first, other, strict=False)) if a != b), None)
    if j is None:
        return f"net {i} has {len(other)} classes, net 1 {len(first)}"
    return f"class {j} is {other[j]!r} in net {i}, {first[j]!r} in net 1"
