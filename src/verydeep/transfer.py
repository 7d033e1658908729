"""Linear SVMs on very deep features (Appendix B): one-vs-rest, C on held-out data, mAP and class recall.

One binary ``LinearSVC`` per class (one-vs-rest) on L2-normalised descriptors. The penalty C is
chosen among ``SVMConfig.cs`` by ``folds``-fold cross-validation on the training split (stratified
for multi-class data; ``folds=0``: one held-out ``val_fraction``), then the SVMs are refitted on
the whole training split. For multi-label data every class gets its own C (its own binary
problem, its own AP); multi-class data, whose prediction is the argmax over all classes, gets
one C for all. Metrics:

* multi-label (VOC): mean over classes of average precision. ``ap="voc07"`` is VOC-2007's
  11-point interpolated AP (mean over recall r in {0, 0.1, ..., 1} of the best precision at
  recall >= r); ``"area"`` (default, VOC-2010 onwards) is the area under the interpolated
  (monotone) precision-recall curve; ``"raw"`` is the non-interpolated sum of (R_n - R_{n-1}) P_n,
  scikit-learn's ``average_precision_score``. Tied scores count as one threshold (the VOC devkit
  breaks ties by sort order instead). Labels 0 (difficult) are ignored for that class.
* multi-class (Caltech): mean class recall, the mean over classes of the fraction of a class's
  test images predicted as that class; over N random splits of K training images per class it is
  reported as mean and sample standard deviation (ddof 1).

Example:
    >>> import numpy as np
    >>> from verydeep.transfer import average_precision, mean_class_recall
    >>> average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, -1, 1]), "raw")  # (1 + 2/3) / 2
    0.8333333333333333
    >>> mean_class_recall(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))[0]  # (1/2 + 2/2) / 2
    0.75
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .ranges import check, spec

AP_MODES = ("voc07", "area", "raw")


@dataclass(frozen=True)
class SVMConfig:
    cs: tuple[float, ...] = spec((0.01, 0.1, 1.0, 10.0, 100.0), gt=0)  # candidates for the penalty C
    val_fraction: float = spec(0.25, gt=0, lt=1)  # held out of the training split to choose C (folds 0)
    # cross-validation folds of the training split that choose C (0: one held-out part; 1 is refused)
    folds: int = spec(3, lo=0, hi=20)
    per_class_c: bool = True  # multi-label: a C per class (multi-class data always shares one)
    # LinearSVC loss: squared_hinge (L2-SVM) | hinge (L1-SVM)
    loss: str = spec("squared_hinge", choices=("squared_hinge", "hinge"))
    ap: str = spec("area", choices=AP_MODES)  # voc07 | area | raw (see the module docstring)
    max_iter: int = spec(10000, lo=1)
    seed: int = spec(0, lo=0, hi=2**32 - 1)

    def __post_init__(self) -> None:
        if not self.cs:
            raise ValueError("svm.cs: give at least one C candidate")
        check(self, "svm")
        if self.folds == 1:
            raise ValueError("svm.folds must be 0 (one held-out part) or in [2, 20], got 1")


# --- metrics ---------------------------------------------------------------------------------
def precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score threshold, highest first (labels 0 ignored)."""
    keep = labels != 0
    s, pos = np.asarray(scores, dtype=np.float64)[keep], labels[keep] > 0
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each run of tied scores
    tp = np.cumsum(pos)[last]
    precision = tp / (last + 1)
    recall = tp / max(int(pos.sum()), 1)
    return precision, recall


def average_precision(scores: np.ndarray, labels: np.ndarray, mode: str = "area") -> float:
    """AP of one class; ``labels`` in {1, -1, 0 (ignored)} or {1, 0} booleans; NaN without positives."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = np.where(labels, 1, -1)
    if not (labels > 0).any():
        return float("nan")
    precision, recall = precision_recall(scores, labels)
    if mode == "voc07":
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]))
    if mode == "area":  # precision made non-increasing: the best precision at any higher recall
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    elif mode != "raw":
        raise ValueError(f"ap mode must be one of {AP_MODES}, got {mode!r}")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(
    scores: np.ndarray, labels: np.ndarray, mode: str = "area"
) -> tuple[float, list[float]]:
    """(mAP over classes with at least one positive, per-class AP) for (N, C) scores and labels."""
    aps = [average_precision(scores[:, c], labels[:, c], mode) for c in range(labels.shape[1])]
    valid = [a for a in aps if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def mean_class_recall(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None
) -> tuple[float, list[float]]:
    """(mean over classes present in ``y_true`` of per-class recall, per-class recall; NaN if absent)."""
    n = n_classes if n_classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    recalls = [
        float(np.mean(y_pred[y_true == c] == c)) if (y_true == c).any() else float("nan") for c in range(n)
    ]
    return float(np.nanmean(recalls)), recalls


# --- one-vs-rest SVMs ----------------------------------------------------------------------------
def binary_targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) in {1, -1, 0}: multi-label labels as they are, class indices one-hot as +-1."""
    if labels.ndim == 2:
        return labels.astype(np.int8)
    return np.where(np.arange(n_classes)[None, :] == labels[:, None], 1, -1).astype(np.int8)


def fit_ovr(
    x: np.ndarray, targets: np.ndarray, c: float | np.ndarray, cfg: SVMConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One LinearSVC per column of ``targets`` (rows with 0 left out), with penalty ``c`` (one
    value, or one per column): weights (C, D), biases (C,)."""
    c_per = np.broadcast_to(np.asarray(c, dtype=float), (targets.shape[1],))
    from sklearn.exceptions import ConvergenceWarning  # here: the CLI's parser imports this module
    from sklearn.svm import LinearSVC

    ws, bs = [], []
    for j in range(targets.shape[1]):
        keep = targets[:, j] != 0
        y = targets[keep, j] > 0
        if y.all() or not y.any():
            raise ValueError(f"class {j} has only {'positive' if y.all() else 'negative'} training images")
        svm = LinearSVC(
            C=float(c_per[j]),
            loss=cfg.loss,
            dual=True if cfg.loss == "hinge" else "auto",
            max_iter=cfg.max_iter,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(x[keep], y)
        ws.append(svm.coef_[0])
        bs.append(svm.intercept_[0])
    return np.stack(ws), np.array(bs)


def score(x: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """SVM decision values (N, C)."""
    return x @ model[0].T + model[1]


def task_metric(scores: np.ndarray, labels: np.ndarray, cfg: SVMConfig) -> tuple[float, list[float]]:
    """mAP for multi-label labels (N, C), mean class recall for class indices (N,)."""
    if labels.ndim == 2:
        return mean_average_precision(scores, labels, cfg.ap)
    return mean_class_recall(labels, scores.argmax(1), scores.shape[1])


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices; per class for class indices (each class keeps >= 1 on both sides)."""
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        perm = rng.permutation(len(labels))
        n_val = max(1, round(fraction * len(labels)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    fit, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        val.extend(idx[:n_val])
        fit.extend(idx[n_val:])
    return np.sort(np.array(fit)), np.sort(np.array(val))


def cv_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) index pairs: ``folds``-fold (stratified for class indices), or one
    ``holdout_split`` part for ``folds=0`` (see ``select_c``)."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(len(labels))]
        if labels.ndim == 2
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    fold_of = np.empty(len(labels), dtype=int)
    for g in groups:  # each class dealt round-robin over the folds, in a random order
        fold_of[rng.permutation(g)] = np.arange(len(g)) % folds
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]


def select_c(
    x: np.ndarray, labels: np.ndarray, n_classes: int, cfg: SVMConfig
) -> tuple[float | list, dict, float]:
    """The C with the best cross-validated metric (ties: the smaller C), each C's metric, and the
    chosen C's; for multi-label data with ``per_class_c`` one C per class, by that class's mean AP
    (the chosen metric is then the mean over classes of each one's best)."""
    splits = (
        cv_folds(labels, cfg.folds, cfg.seed)
        if cfg.folds
        else [holdout_split(labels, cfg.val_fraction, cfg.seed)]
    )
    targets = binary_targets(labels, n_classes)
    per_class = labels.ndim == 2 and cfg.per_class_c
    results: dict[float, float] = {}
    by_class: dict[float, np.ndarray] = {}
    for c in sorted(cfg.cs):
        runs = [
            task_metric(score(x[val], fit_ovr(x[fit], targets[fit], c, cfg)), labels[val], cfg)
            for fit, val in splits
        ]
        results[c] = float(np.nanmean([r[0] for r in runs]))
        by_class[c] = np.nanmean(np.array([r[1] for r in runs], dtype=float), axis=0)
    if per_class:  # each class its own C: the best mean AP over folds, ties to the smaller C
        grid = np.stack([np.nan_to_num(by_class[c], nan=-1.0) for c in sorted(cfg.cs)])  # (Cs, classes)
        best = [sorted(cfg.cs)[i] for i in grid.argmax(0)]
        chosen = [by_class[c][k] for k, c in enumerate(best)]
        return best, results, float(np.nanmean(chosen)) if not np.isnan(chosen).all() else float("nan")
    best = max(results, key=lambda c: (np.nan_to_num(results[c], nan=-1.0), -c))
    return best, results, results[best]


def train_and_test(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    cfg: SVMConfig,
) -> dict:
    """Choose C on the training data, refit on all of it, evaluate on the test set; multi-label
    results also hold each class's precision-recall curve on the test set (``pr``), multi-class
    ones each test image's predicted class (``pred``)."""
    best, held_out, cv = select_c(x_train, y_train, n_classes, cfg)
    model = fit_ovr(x_train, binary_targets(y_train, n_classes), best, cfg)
    scores = score(x_test, model)
    value, per_class = task_metric(scores, y_test, cfg)
    # cv: the training split's cross-validated metric at the chosen C, to choose descriptors by
    out = {"value": value, "per_class": per_class, "C": best, "held_out": held_out, "cv": cv}
    if y_test.ndim == 1:  # multi-class: the argmax over the one-vs-rest scores
        out["pred"] = scores.argmax(1).tolist()
    if y_test.ndim == 2:
        curves = [precision_recall(scores[:, j], y_test[:, j]) for j in range(n_classes)]
        out["pr"] = [{"precision": p.tolist(), "recall": r.tolist()} for p, r in curves]
    return out
