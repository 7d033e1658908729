"""The whole test protocol: nets x methods (x ensemble) -> rows of the paper's Tables 3-6.

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.checkpoint import Meta
    >>> from verydeep.evaluation import EvalData, EvalOptions, evaluate_models
    >>> net = VGG("A", num_classes=2, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32)
    >>> meta = Meta(preprocess={"mean": [0.0], "std": [1.0], "pixel_range": 255.0, "bgr": False},
    ...             classes=["a", "b"], train_scale=[256])
    >>> data = EvalData(["a", "b"], images=torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
    ...                 labels=torch.tensor([0, 1, 0, 1]))
    >>> res = evaluate_models([("tiny", net, meta)], data, EvalOptions(progress=False, workers=0))
    >>> [(r["method"], r["test_pixels"], r["forwards_per_image"]) for r in res["rows"]]
    [('dense', '32,37,41', 6.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..io.checkpoint import Meta, check_classifier, check_distinct, load_model
from ..models.vgg import VGG
from .data import EvalData, open_data
from .metrics import classification_metrics
from .precision import for_precision
from .runner import EvalOptions, calibration_images, evaluate_net, forwards_per_image, scales_for


def net_names(paths: Sequence[str | Path]) -> list[str]:
    """Short unique row names: the file stem, with parent folders added until unique; the
    same file given twice gets ``#2``, ``#3``...

    >>> net_names(["runs/d/best.safetensors", "runs/e/best.safetensors", "x/a.safetensors"])
    ['d/best', 'e/best', 'a']
    """
    parts = [[q for q in Path(p).with_suffix("").parts if q not in ("/", "")] for p in paths]
    names = ["/".join(p[-1:]) for p in parts]
    for depth in range(2, max(len(p) for p in parts) + 1):
        dup = {n for n in names if names.count(n) > 1}
        if not dup:
            break
        names = ["/".join(p[-depth:]) if n in dup else n for n, p in zip(names, parts, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _fmt(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _row(net: str, method: str, probs, labels, seconds: float, fwd: float, info: dict) -> dict:
    m = classification_metrics(probs, labels)
    n = m["n"]
    return {
        "net": net,
        "method": method,
        **info,
        **m,
        "images_per_s": n / seconds if seconds > 0 else None,
        "forwards_per_image": fwd,
        "seconds": seconds,
    }


def _check_classes(name: str, model: VGG, meta: Meta, data: EvalData) -> None:
    if meta.classes and list(meta.classes) != list(data.classes):
        raise ValueError(
            f"{name}: its classes differ from the data's ({meta.classes[:3]} vs {data.classes[:3]})"
        )
    if model.num_classes != len(data.classes):
        raise ValueError(f"{name}: {model.num_classes} outputs but the data has {len(data.classes)} classes")


def evaluate_models(nets: Sequence[tuple[str, VGG, Meta]], data: EvalData, opts: EvalOptions) -> dict:
    """Evaluate every net with every method in ``opts.methods``; add ensemble rows if > 1 net.

    Returns a dict: ``rows`` (one per net and method: errors, per-class accuracy, confusion,
    images/s, forward passes per image), ``posteriors`` and ``labels`` (tensors), and settings.

    Nets may differ in config, crop size and preprocessing; each is tested at its own scales
    (``opts.scales`` resolved against its ``train_scale``) and must share the data's classes.
    """
    data = data.subset(opts.limit)
    labels_all = data.label_tensor()
    results, rows, post = [], [], {}
    for name, model, meta in nets:
        _check_classes(name, model, meta, data)
        model.eval().to(opts.device)
        if opts.channels_last:
            model.to(memory_format=torch.channels_last)
        q_paper, q_px = scales_for(meta.train_scale, model.crop_size, opts.scales)
        precision = opts.numerics().mode
        net, _ = for_precision(model, meta.prep, precision, calibration_images(data, opts))
        res = evaluate_net(net, meta.prep, data, q_px, opts, desc=name)
        info = {
            "arch": model.arch,
            "precision": precision,
            "train_scale": "-".join(f"{s:g}" for s in meta.train_scale),
            "test_scales": _fmt(q_paper),
            "test_pixels": _fmt(q_px),
        }
        if getattr(net, "exact", None) is not None:  # int8-checked: the share it redid in fp32
            info["rechecked_share"] = net.rechecked / max(net.checked, 1)  # of every posterior row
        results.append((name, res, info))
    valid = torch.stack([r.valid for _, r, _ in results]).all(0)
    labels = labels_all[valid]
    for name, res, info in results:
        for method in opts.methods:
            parts = method.split("+")
            probs = torch.stack([res.probs[b] for b in parts]).mean(0)[valid]
            sec = sum(res.seconds[b] for b in parts)
            fwd = forwards_per_image(method, len(res.q_pixels), opts)
            rows.append(_row(name, method, probs, labels, sec, fwd, info))
            rows[-1]["forward_batches"] = sum(res.batches[b] for b in parts)
            post[(name, method)] = probs
    if len(results) > 1:
        rows += _ensemble_rows(results, valid, labels, opts, post)
    return {
        "data": data.name,
        "classes": data.classes,
        "n_images": int(valid.sum()),
        "skipped": len(data) - int(valid.sum()),
        "methods": opts.methods,
        "average": opts.average,
        "flip": opts.flip,
        "grid": opts.grid,
        "rows": rows,
        "labels": labels,  # tensors, for callers; the CLI drops them from --json
        "posteriors": post,  # (net, method) -> (n_images, classes) over the readable images
    }


def _ensemble_rows(
    results: list, valid: torch.Tensor, labels: torch.Tensor, opts: EvalOptions, post: dict
) -> list[dict]:
    """Posterior-level average over nets, for each method."""
    name = f"ensemble of {len(results)}"
    rows = []
    for method in opts.methods:
        parts = method.split("+")
        per_net = [torch.stack([r.probs[b] for b in parts]).mean(0)[valid] for _, r, _ in results]
        sec = sum(r.seconds[b] for _, r, _ in results for b in parts)
        fwd = sum(forwards_per_image(method, len(r.q_pixels), opts) for _, r, _ in results)
        info = {"arch": "+".join(i["arch"] for _, _, i in results), "train_scale": "", "test_scales": ""}
        info["test_pixels"] = ""
        post[(name, method)] = torch.stack(per_net).mean(0)
        rows.append(_row(name, method, post[(name, method)], labels, sec, fwd, info))
    return rows


def load_classifiers(paths: Sequence[str | Path], device: str) -> list[tuple[VGG, Meta]]:
    """(net, meta) of each checkpoint, for eval and predict: no net named twice, no box net."""
    check_distinct(list(paths))
    loaded = [load_model(p, device) for p in paths]
    for path, (_, meta) in zip(paths, loaded, strict=True):
        check_classifier(meta, path)
    return loaded


def evaluate(
    paths: Sequence[str | Path], data_spec: str, opts: EvalOptions, split: str | None = None
) -> dict:
    """Load checkpoints and evaluate them (and their ensemble) on ``data_spec``.

    ``data_spec``: an ImageFolder directory (labels in the first net's class order; ``split``:
    a sub-folder), a VOC root (its ``split``, by default ``val``) or ``fashion-mnist[:ROOT]``
    (test split).
    """
    if not paths:
        raise ValueError("give at least one checkpoint")
    loaded = load_classifiers(paths, opts.device)
    data = open_data(str(data_spec), classes=loaded[0][1].classes or None, split=split)
    nets = [(n, m, meta) for n, (m, meta) in zip(net_names(paths), loaded, strict=True)]
    return evaluate_models(nets, data, opts)
