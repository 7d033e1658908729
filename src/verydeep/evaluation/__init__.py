"""Section 3.2 of the paper: dense, multi-crop, multi-scale and ensemble evaluation.

- ``core``: the methods on batches of same-size images (``dense_probs``, ``multicrop_probs``,
  ``centre_probs``; ``dense_pooled`` for scores and FC6/FC7 features, ``dense_maps`` for maps);
- ``data``: evaluation images (ImageFolder or Fashion-MNIST) rescaled to each test scale;
- ``runner``: one net over a data set, bucketed by image shape, timed per method;
- ``protocol``: nets x methods (+ ensemble) -> rows of Tables 3-6; ``metrics``: errors, tables;
- ``predict``: top-5 classes of image files and the class score heat map.

Example:
    >>> from verydeep.evaluation import default_scales, grid_offsets
    >>> default_scales([256, 512]), grid_offsets(256, 224)
    ([256.0, 384.0, 512.0], [0, 8, 16, 24, 32])
"""

from .core import (
    Runtime,
    centre_probs,
    dense_maps,
    dense_pooled,
    dense_probs,
    grid_offsets,
    multicrop_probs,
    rescale,
)
from .data import EvalData, open_data
from .metrics import classification_metrics, format_csv, format_table, topk_error
from .protocol import evaluate, evaluate_models
from .runner import EvalOptions, default_scales, evaluate_net, parse_methods, resolve_scales

__all__ = [
    "EvalData",
    "EvalOptions",
    "Runtime",
    "centre_probs",
    "classification_metrics",
    "default_scales",
    "dense_maps",
    "dense_pooled",
    "dense_probs",
    "evaluate",
    "evaluate_models",
    "evaluate_net",
    "format_csv",
    "format_table",
    "grid_offsets",
    "multicrop_probs",
    "open_data",
    "parse_methods",
    "rescale",
    "resolve_scales",
    "topk_error",
]
