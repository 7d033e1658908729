"""Error rates from posteriors, and the results table in the layout of the paper's Tables 3-6.

Example:
    >>> import torch
    >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    >>> m = classification_metrics(p, torch.tensor([0, 1, 1]))
    >>> m["top1_err"], m["top5_err"], m["k"], m["per_class_acc"]
    (66.66666666666667, 0.0, 3, [1.0, 0.0, None])
"""

from __future__ import annotations

import csv
import io

import torch


def topk_error(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of images whose label is not among the ``k`` highest posteriors (k clipped)."""
    k = min(k, probs.shape[1])
    hit = (probs.topk(k, dim=1).indices == labels[:, None]).any(1)
    if len(labels) == 0:
        return float("nan")
    return 100.0 * int((~hit).sum()) / len(labels)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 and top-5 error (%), per-class accuracy (None for absent classes), confusion matrix."""
    probs, labels = probs.float().cpu(), labels.cpu()
    num_classes = probs.shape[1]
    conf = confusion_matrix(probs.argmax(1), labels, num_classes)
    support = conf.sum(1)
    per_class = [(conf[c, c] / support[c]).item() if support[c] else None for c in range(num_classes)]
    return {
        "n": len(labels),
        "top1_err": topk_error(probs, labels, 1),
        "top5_err": topk_error(probs, labels, 5),
        "k": min(5, num_classes),
        "per_class_acc": per_class,
        "confusion": conf.tolist(),
    }


def format_table(rows: list[dict], methods: list[str]) -> str:
    """Text table: one row per net, one column per method with ``top-1/top-5`` error (%),
    then the cost of each method (images/s, forward passes per image)."""
    nets = list(dict.fromkeys(r["net"] for r in rows))
    cell = {(r["net"], r["method"]): r for r in rows}
    width = max([len(n) for n in nets] + [8])
    info = {r["net"]: (r.get("arch", ""), r.get("train_scale", ""), r.get("test_scales", "")) for r in rows}
    head = f"{'net':<{width}} {'arch':<6} {'train S':<10} {'test Q':<14}"
    mw = max([len(m) for m in methods] + [11])
    lines = ["top-1/top-5 error (%)", head + "".join(f" {m:>{mw}}" for m in methods)]
    for n in nets:
        arch, s, q = info[n]
        line = f"{n:<{width}} {arch:<6} {s:<10} {q:<14}"
        for m in methods:
            r = cell.get((n, m))
            txt = f"{r['top1_err']:.1f}/{r['top5_err']:.1f}" if r else "-"
            line += f" {txt:>{mw}}"
        lines.append(line)
    lines += ["", "cost: images/s, forward passes per image"]
    lines.append(f"{'net':<{width}}" + "".join(f" {m:>{mw + 6}}" for m in methods))
    for n in nets:
        line = f"{n:<{width}}"
        for m in methods:
            r = cell.get((n, m))
            txt = f"{r['images_per_s'] or 0:.1f}, {r['forwards_per_image']:g}" if r else "-"
            line += f" {txt:>{mw + 6}}"
        lines.append(line)
    return "\n".join(lines)


CSV_FIELDS = [
    "net",
    "method",
    "arch",
    "train_scale",
    "test_scales",
    "n",
    "top1_err",
    "top5_err",
    "k",
    "images_per_s",
    "forwards_per_image",
    "seconds",
]


def format_csv(rows: list[dict]) -> str:
    """One CSV line per (net, method) with the fields of ``CSV_FIELDS``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
