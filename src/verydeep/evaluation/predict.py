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

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..data.images import load_image
from ..io.checkpoint import Meta
from ..models.vgg import VGG
from .core import (
    CPU,
    Runtime,
    centre_probs,
    dense_maps,
    dense_probs,
    match_channels,
    multicrop_probs,
    rescale,
)
from .runner import parse_methods, scales_for


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


def predict(nets: Sequence[tuple[VGG, Meta]], paths: Sequence[str | Path], top: int = 5, **kw) -> list[dict]:
    """Top-``top`` (clipped to the classes) names and posteriors per image; several nets are
    averaged as an ensemble. Unreadable files raise ``BadImageError`` (a ``ValueError``)."""
    names = class_names(nets[0][1], nets[0][0].num_classes)
    if any(class_names(meta, m.num_classes) != names for m, meta in nets[1:]):
        raise ValueError("an ensemble needs nets with the same classes")
    out = []
    for path in paths:
        img = load_image(path)
        with Image.open(path) as raw:
            mode = raw.mode
        probs = torch.stack([image_posteriors(m, meta, img, **kw) for m, meta in nets]).mean(0)
        p, i = probs.topk(min(top, len(probs)))
        out.append(
            {
                "path": str(path),
                "size": list(img.size),
                "mode": mode,
                "top": [
                    {"class": names[c], "index": int(c), "prob": float(v)} for v, c in zip(p, i, strict=True)
                ],
                "probs": probs,
            }
        )
    return out


def score_map(model: VGG, meta: Meta, img: Image.Image, cls: int, q: int, rt: Runtime = CPU) -> torch.Tensor:
    """Flip-averaged dense score map (h, w) of class ``cls`` for ``img`` rescaled to ``q``."""
    x = match_channels(rescale(img, q), model.in_channels)[None]
    with torch.inference_mode():
        return dense_maps(model, x, meta.prep, flip=True, rt=rt)[0, cls].cpu()


def heatmap_png(panels: Sequence[tuple[Image.Image, int, torch.Tensor, str]], crop: int) -> bytes:
    """PNG: per image, the photo and the photo under its class score map (jet, 50% alpha).

    ``panels``: (original image, test scale Q it was rescaled to, (h, w) map, title). Map cell
    (i, j) is the window of ``crop`` pixels at (32 i, 32 j) of the rescaled image (five 2x2 pools:
    stride 32), drawn as a 32 px square around the window's centre, mapped back onto the photo.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 4 * len(panels)), squeeze=False)
    for (img, q, m, title), (a0, a1) in zip(panels, axes, strict=True):
        f = min(img.size) / q  # photo pixels per rescaled pixel
        h, w = m.shape
        lo = crop / 2 - 16
        extent = (f * lo, f * (lo + 32 * w), f * (lo + 32 * h), f * lo)
        a0.imshow(img)
        a0.set_title(title, fontsize=9)
        a1.imshow(img)
        im = a1.imshow(m.numpy(), cmap="jet", alpha=0.5, extent=extent, interpolation="bilinear")
        a1.set_xlim(0, img.width)
        a1.set_ylim(img.height, 0)
        a1.set_title("class score map (dense, flip-averaged)", fontsize=9)
        fig.colorbar(im, ax=a1, fraction=0.04, label="score (logit)")
        for a in (a0, a1):
            a.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
