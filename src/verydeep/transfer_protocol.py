"""Appendix B's protocol on two descriptor files: the pair checked, linear SVMs, the metric.

Multi-label (VOC) data: one SVM per class, mAP on the test file. Multi-class (Caltech) data:
mean class recall on the test file, or Caltech's random splits of K training images per class
(``caltech.py``). The SVMs and metrics themselves are ``transfer.py``'s.

Example:
    >>> import numpy as np
    >>> from verydeep.io.features import Descriptors
    >>> from verydeep.transfer import SVMConfig
    >>> from verydeep.transfer_protocol import run_transfer
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 6)
    >>> x = rng.normal(size=(12, 4)) + 3 * np.eye(4)[y]   # two separable classes
    >>> d = Descriptors(x.astype(np.float32), y, [f"{i}.jpg" for i in range(12)], ["a", "b"], {})
    >>> run_transfer(d, d, SVMConfig())["value"]
    1.0
"""

from __future__ import annotations

import numpy as np

from .caltech import caltech_protocol
from .transfer import SVMConfig, train_and_test


def _c_words(c: float | list, cfg: SVMConfig) -> str:
    how = f"{cfg.folds}-fold cross-validation" if cfg.folds else "a held-out part"
    if isinstance(c, list):
        spread = f"{min(c):g} to {max(c):g}, median {float(np.median(c)):g}"
        return f"a C per class ({spread}) by {how} of the training data"
    return f"C={c:g} by {how} of the training data"


# what makes two descriptor files comparable (batch size, precision, timings may differ)
DESCRIPTOR_KEYS = ("layer", "scales", "units", "combine", "flip", "normalise_each_scale", "align", "grey")


def check_pair(train: object, test: object) -> None:
    """Train and test ``Descriptors`` must share classes, dimension, task and descriptor recipe."""
    if list(test.classes) != list(train.classes):
        raise ValueError(f"train classes {train.classes[:5]} differ from test classes {test.classes[:5]}")
    if test.task != train.task or test.features.shape[1] != train.features.shape[1]:
        raise ValueError(
            f"train descriptors are {train.task}, {train.features.shape[1]}-D; test ones {test.task}, "
            f"{test.features.shape[1]}-D (made from another layer, scales or net?)"
        )
    a, b = train.info.get("descriptor", {}), test.info.get("descriptor", {})
    differ = [k for k in DESCRIPTOR_KEYS if k in a and k in b and a[k] != b[k]]
    if differ:
        k = differ[0]
        raise ValueError(f"train and test descriptors were made differently: {k} {a[k]} against {b[k]}")


def _check_c_split(labels: np.ndarray, classes: list[str], n_train: int, cfg: SVMConfig) -> None:
    """Every class must fill each part that chooses C (a fold without a class scores nothing for it)."""
    need = max(2, cfg.folds)
    how = f"{cfg.folds}-fold cross-validation" if cfg.folds else "a held-out part (--folds 0)"
    if n_train > 0:  # Caltech splits: n_train images of every class
        if n_train < need:
            raise ValueError(
                f"{n_train} training image(s) per class: choosing C by {how} needs at least {need}"
            )
        return
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < need:
        raise ValueError(
            f"class {classes[int(counts.argmin())]!r} has {counts.min()} training image(s); choosing C by "
            f"{how} needs at least {need} per class (fewer --folds, or more training images)"
        )


def run_transfer(
    train: object,
    test: object | None,
    cfg: SVMConfig,
    n_train: int = 0,
    n_test: int | None = None,
    n_splits: int = 3,
) -> dict:
    """SVMs on two ``Descriptors`` (features, labels, classes): the metric, per class, and a summary line.

    Multi-label data: mAP on ``test``. Multi-class data: mean class recall on ``test``, or with
    ``n_train`` > 0 the Caltech protocol (splits drawn from ``train``, scored on ``test`` if given).
    """
    if test is not None:
        check_pair(train, test)
    k = len(train.classes)
    multilabel = train.labels.ndim == 2
    metric = f"mAP ({cfg.ap})" if multilabel else "mean class recall"
    if not multilabel:
        _check_c_split(train.labels, train.classes, n_train, cfg)
    if multilabel or n_train <= 0:
        if test is None:
            raise ValueError("a test descriptor file is needed (or --per-class for Caltech-style splits)")
        r = train_and_test(train.features, train.labels, test.features, test.labels, k, cfg)
        r |= {"std": 0.0, "metric": metric}
        r["summary"] = f"{metric}: {100 * r['value']:.2f}% ({_c_words(r['C'], cfg)})"
    else:
        held = (test.features, test.labels) if test is not None else None
        r = caltech_protocol(train.features, train.labels, k, cfg, n_train, n_test, n_splits, held)
        r["per_class"] = np.nanmean([s["per_class"] for s in r["splits"]], axis=0).tolist()
        cs = ", ".join(f"{s['C']:g}" for s in r["splits"])
        r["summary"] = (
            f"{metric}: {100 * r['value']:.2f} +- {100 * r['std']:.2f}% over {n_splits} splits of "
            f"{n_train} training images per class (C per split: {cs})"
        )
        r["metric"] = metric
    r["classes"] = list(train.classes)
    return r
