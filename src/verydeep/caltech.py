"""The Caltech-101/256 protocol of Appendix B: random splits of K training images per class, the
mean class recall's mean and standard deviation over them, the paper's presets, and the choice
the paper leaves open (the background class).

Example:
    >>> import numpy as np
    >>> from verydeep.caltech import caltech_splits
    >>> tr, te = caltech_splits(np.repeat([0, 1], [40, 45]), 30, 50, 1)[0]
    >>> len(tr), len(te)
    (60, 25)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .transfer import SVMConfig, train_and_test

# Appendix B: 3 random splits; Caltech-101 30 training and up to 50 test images per class,
# Caltech-256 60 training images per class and the rest for testing; mean class recall.
PROTOCOLS = {
    "caltech101": {"n_train": 30, "n_test": 50, "n_splits": 3},
    "caltech256": {"n_train": 60, "n_test": None, "n_splits": 3},
}


def drop_classes(d: object, names: list[str]) -> object:
    """``d`` (``Descriptors`` of class indices) without the images of the classes ``names``
    (e.g. Caltech-101's BACKGROUND_Google, Caltech-256's 257.clutter), labels renumbered."""
    unknown = sorted(set(names) - set(d.classes))
    if unknown:
        raise ValueError(f"no class {unknown[0]!r} to drop; the classes are {d.classes[:5]}...")
    if d.labels.ndim == 2:
        raise ValueError("classes can be dropped from multi-class (Caltech-style) descriptors only")
    keep_cls = [c for c in d.classes if c not in names]
    if len(keep_cls) < 2:
        raise ValueError(f"dropping {', '.join(names)} leaves {len(keep_cls)} class(es); SVMs need 2 or more")
    new_index = {d.classes.index(c): i for i, c in enumerate(keep_cls)}
    rows = np.flatnonzero(np.isin(d.labels, list(new_index)))
    labels = np.array([new_index[int(v)] for v in d.labels[rows]], dtype=d.labels.dtype)
    return type(d)(d.features[rows], labels, [d.paths[i] for i in rows], keep_cls, dict(d.info))


def caltech_splits(
    labels: np.ndarray, n_train: int, n_test: int | None, n_splits: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` random (train, test) index pairs: ``n_train`` per class, up to ``n_test`` of the rest."""
    counts = np.bincount(labels)
    short = [int(c) for c in np.unique(labels) if counts[c] <= n_train]
    if short:
        raise ValueError(f"classes {short[:5]} have <= {n_train} images; lower the training images per class")
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        train, test = [], []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            train.extend(idx[:n_train])
            test.extend(idx[n_train:] if n_test is None else idx[n_train : n_train + n_test])
        splits.append((np.sort(np.array(train)), np.sort(np.array(test))))
    return splits


def caltech_protocol(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    cfg: SVMConfig,
    n_train: int,
    n_test: int | None = None,
    n_splits: int = 3,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Mean class recall over random splits: mean, sample std and each split's result.

    Splits are drawn from (``x``, ``labels``); with ``test`` given, each split's SVMs are scored
    on that fixed test set instead of the rest of the pool.
    """
    runs = []
    for i, (tr, te) in enumerate(caltech_splits(labels, n_train, n_test, n_splits, cfg.seed)):
        split_cfg = dataclasses.replace(cfg, seed=cfg.seed + i)
        x_te, y_te = test if test is not None else (x[te], labels[te])
        runs.append(train_and_test(x[tr], labels[tr], x_te, y_te, n_classes, split_cfg))
    values = np.array([r["value"] for r in runs])
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"value": float(values.mean()), "std": std, "splits": runs}
