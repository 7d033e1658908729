"""The report's class score maps: dense evaluation of one study net over a few photographs.

Example (needs a trained net; ``verydeep study`` calls it when the chosen net's weights are at
hand):
    >>> from verydeep.study.figures import pick_images
    >>> pick_images([("a.jpg", 0), ("b.jpg", 0), ("c.jpg", 1), ("d.jpg", 2)], 2)
    [('a.jpg', 0), ('d.jpg', 2)]
"""

from __future__ import annotations

from pathlib import Path

from ..config import pixels
from ..data.images import load_image
from ..data.loaders import spread_indices
from ..evaluation.predict import class_names, score_map
from ..evaluation.runner import scales_for
from ..io.checkpoint import load_model
from ..io.plots import heatmap_png


def pick_images(samples: list, n: int) -> list:
    """The first photograph of each of ``n`` classes spread over the label range."""
    first: dict[int, tuple] = {}
    for s in samples:
        first.setdefault(s[1], s)
    labels = sorted(first)
    return [first[labels[i]] for i in spread_indices(len(labels), n)]


def score_maps_png(
    checkpoint: str | Path, samples: list, name: str, n: int = 4, readable: dict[str, str] | None = None
) -> bytes:
    """PNG: ``n`` photographs and the dense score map of their true class, at the largest of the
    net's test scales and the paper's Q = 512 (in paper units), so that the map has windows to show;
    ``readable`` maps class names (e.g. WordNet ids) to the names the titles show."""
    model, meta = load_model(checkpoint)
    names = class_names(meta, model.num_classes)
    _, q_px = scales_for(meta.train_scale, model.crop_size, "multi")
    q = max(*q_px, pixels(512, model.crop_size))  # at least the paper's largest Q: a map, not a dot
    panels = []
    for path, label in pick_images(samples, n):
        img = load_image(path)
        m, offset = score_map(model, meta, img, label, q)
        shown = (readable or {}).get(names[label], names[label])
        title = f"{shown} ({Path(path).name})\n{name}: {m.shape[0]}x{m.shape[1]} windows at Q={q} px"
        panels.append((img, q, m, offset, title))
    return heatmap_png(panels, model.crop_size)
