"""The fine-tuning study's results block: a table per data set, the plan's comparisons, the imports.

Noise: a row's accuracy p on n test photos has the binomial standard error sqrt(p(1-p)/n). Two
rows scored on the same photos are compared by the paired standard error of their difference
(the standard deviation of the per-photo difference in correctness over sqrt(n), as McNemar's
test pairs them); a difference counts only beyond twice that.

Example:
    >>> from verydeep.study.finetune_report import paired
    >>> a = {"pred": [0, 1, 1, 0], "labels": [0, 1, 1, 1]}   # 3 of 4 right
    >>> b = {"pred": [1, 1, 0, 0], "labels": [0, 1, 1, 1]}   # 1 of 4 right
    >>> diff, se = paired(a, b)
    >>> round(diff, 2), round(se, 2)
    (0.5, 0.29)
"""

from __future__ import annotations

import math

import numpy as np

from .finetune_plan import IMPORTS, FinetuneSpec
from .finetune_runner import run_finetune_study
from .report import paired_difference, verdict

BEGIN, END = "<!-- finetune-study results: begin -->", "<!-- finetune-study results: end -->"
Spec = FinetuneSpec  # the name every plan module gives its spec (cli/plan_study.py)
START_WORDS = {
    "source": "the source",
    "pth": "source -> .pth -> convert",
    "h5": "source -> .h5 -> convert",
    "caffemodel": "source -> .caffemodel -> convert",
    "random": "random (Glorot)",
    "scratch": "nothing (scratch)",
}


def correct(r: dict) -> np.ndarray:
    return np.asarray(r["pred"]) == np.asarray(r["labels"])


def binomial_se(r: dict) -> float:
    p = r["accuracy"]
    return math.sqrt(p * (1 - p) / r["n"])


def paired(a: dict, b: dict) -> tuple[float, float]:
    """(accuracy of a - accuracy of b, paired standard error) on the same test photos."""
    if a["labels"] != b["labels"]:
        raise ValueError("the two rows were scored on different photos")
    diff, se = paired_difference(correct(a), correct(b))
    return diff, se or 0.0


def _trains(r: dict) -> str:
    if r["method"] == "svm":
        return f"linear SVM on FC7 (Q={','.join(map(str, r.get('svm_scales', [])))})"
    layers = r.get("layers", "all")
    return {"all": "all layers", "fc": "FC6-8", "fc8": "FC8"}.get(layers, layers)


def _seeds(results: dict, key: str) -> str:
    others = sorted((k for k in results if k.startswith(key + "-seed")), key=len)
    return ", ".join(f"{100 * results[k]['accuracy']:.1f}" for k in others) or "-"


def dataset_table(spec: FinetuneSpec, results: dict, name: str) -> list[str]:
    lines = [
        "| row | starts from | trains | lr | epochs | accuracy % (± s.e.) | mean class recall % "
        "| other seeds | CPU min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in spec.rows:
        r = results.get(f"{name}/{row.name}")
        if r is None:
            lines.append(f"| {row.label or row.name} | {START_WORDS[row.start]} | not run | | | | | | |")
            continue
        lr = f"{r['lr']:g}" if r.get("lr") else "-"
        acc = f"{100 * r['accuracy']:.1f} ± {100 * binomial_se(r):.1f}"
        lines.append(
            f"| {row.label or row.name} | {START_WORDS[row.start]} | {_trains(r)} | {lr} "
            f"| {r.get('epochs') or '-'} "
            f"| {acc} | {100 * r['mean_class_recall']:.1f} | {_seeds(results, f'{name}/{row.name}')} "
            f"| {r['cpu_s'] / 60:.1f} |"
        )
    return lines


def comparisons(spec: FinetuneSpec, results: dict, name: str) -> list[str]:
    out = []
    for a, b in spec.compare:
        ra, rb = results.get(f"{name}/{a}"), results.get(f"{name}/{b}")
        if ra is None or rb is None:
            continue
        diff, se = paired(ra, rb)
        word = {"holds": "beats it", "noise": "within the noise of it", "reversed": "loses to it"}
        out.append(
            f"- {a} against {b}: {100 * diff:+.1f} points (paired s.e. {100 * se:.1f}): "
            f"{a} {word[verdict(diff, 0.0, se)]}"
        )
    return out


def imports_table(results: dict) -> list[str]:
    starts = {k: v for k, v in (results.get("starts") or {}).items() if k in IMPORTS}
    if not starts:
        return []
    lines = [
        "| written as, read back | input convention after `convert` "
        "| max abs logit difference from the source |",
        "| --- | --- | --- |",
    ]
    for fmt, s in starts.items():
        lines.append(
            f"| .{fmt} | {s['input']} | {s['max_abs_logit_diff']:.2g} (logits up to {s['logit_scale']:.3g}) |"
        )
    return lines


def source_line(spec: FinetuneSpec, results: dict) -> list[str]:
    s = (results.get("starts") or {}).get("source")
    if not s:
        return []
    m = s.get("meta", {})
    errs = s.get("top1_err", {})
    said = f"config {m.get('arch')}, width {m.get('width_mult')}, FC {m.get('fc_width')}"
    said += f", crop {m.get('crop_size')}"
    if s.get("epochs"):
        said += f"; {s['epochs']} epochs on `{s.get('data')}`"
    if s.get("held_out_err") is not None:
        said += f", best held-out error {100 * s['held_out_err']:.1f}% (10% of its train split)"
    if "single/dense" in errs:
        said += f"; its own val error {100 * errs['single/dense']:.1f}% (single scale, dense)"
    return [f"Source: {said}.", ""]


def render_block(spec: FinetuneSpec, results: dict, command: str = "") -> str:
    """The Markdown between ``BEGIN`` and ``END`` (inclusive), from the summaries alone (the
    report's prose names the ``command``)."""
    lines = [BEGIN, "", *source_line(spec, results)]
    for d in spec.datasets:
        n = next((r["n"] for k, r in results.items() if k.startswith(f"{d.name}/")), None)
        lines += [f"**{d.name}** ({n or '?'} test photos, `{d.root}` {spec.test_split}):", ""]
        lines += [*dataset_table(spec, results, d.name), ""]
        lines += [*comparisons(spec, results, d.name), ""]
    imports = imports_table(results)
    if imports:
        lines += ["Each format written out by `verydeep export` and read back by `verydeep convert`:", ""]
        lines += [*imports, ""]
    return "\n".join([*lines, END])


def run_plan(spec: FinetuneSpec, progress: bool = True, report_only: bool = False) -> dict:
    """``run_finetune_study``; empty where no row has a summary yet."""
    results = run_finetune_study(spec, progress=progress, report_only=report_only)
    return results if any(k != "starts" for k in results) else {}
