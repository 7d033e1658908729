"""The localisation plan's results block (``study/loc_study.py``), from the summaries alone.

The choice is the candidate (a net or a fusion, each with its own tuned merging) with the lowest
top-1 error on ``choose_split``; every candidate tied there is marked. ``report_split`` is only
read: its numbers are reported, never compared to choose. The block gives the choice, the
baselines on the same photographs, and the first ``show`` candidates by their choosing error.

Example:
    >>> from verydeep.study.loc_report import net_words
    >>> net_words("pcr-fc")
    'PCR, FC only'
"""

from __future__ import annotations

import numpy as np

from .loc_runner import entry_names, run_plan  # noqa: F401 - cli/plan_study.py calls them
from .loc_study import LocSpec

BEGIN, END = "<!-- localization-study results: begin -->", "<!-- localization-study results: end -->"
Spec = LocSpec  # the name every plan module gives its spec (cli/plan_study.py)
BASELINES = {
    "whole/classifier_class": "the whole photograph as the box, classifier's class",
    "whole/gt_class": "the whole photograph as the box, ground-truth class",
    "mean/classifier_class": "the mean training box, classifier's class",
    "mean/gt_class": "the mean training box, ground-truth class",
}


def net_words(net: str) -> str:
    head, layers = net.split("-")
    return f"{head.upper()}, {'all layers' if layers == 'all' else 'FC only'}"


def label(spec: LocSpec, folder: str, net: str) -> str:
    """A candidate in words: a run's net, or a fusion's set with the nets it pools."""
    fusion = next((f for f in spec.fusions if f.name == folder), None)
    if fusion is None:
        return net_words(net)
    pooled = [n.split("/") for n in fusion.sets[net]]
    if len({run for run, _ in pooled}) == 1:
        return f"fusion of {pooled[0][0]}: " + " + ".join(n for _, n in pooled)
    return "fusion: " + " + ".join("/".join(p) for p in pooled)


def ranked(results: dict) -> list[tuple[float, str, str, dict]]:
    """(choosing error, folder, net, val summary) of every candidate, lowest first (ties: by name)."""
    rows = [
        (r["tune"]["best"]["top1"], *name.split("/"), r["val"]) for name, r in results.items() if "tune" in r
    ]
    return sorted(rows, key=lambda r: r[:3])


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def choice_table(spec: LocSpec, rows: list) -> list[str]:
    """The choice on report_split against each ``compare`` run's own choice and the baselines."""
    val = rows[0][3]
    dense = val["dense"]
    lines = [
        f"| {val['images']} `{spec.report_split}` photographs | top-1 localisation error |",
        "| --- | --- |",
    ]
    lines.append(f"| **the choice** | **{pct(dense['top1'])}%** (top-2 {pct(dense.get('top2', 0))}%) |")
    for name in spec.compare:
        own = [r for r in rows if r[1] == name]
        if own:  # that run's candidates alone, chosen the same way
            words = f"{spec.run(name).label or name}: its choice, {net_words(own[0][2])}"
            lines.append(f"| {words} | {pct(own[0][3]['dense']['top1'])}% |")
    return lines + [f"| {words} | {pct(val['baselines'][key])}% |" for key, words in BASELINES.items()]


def noise_line(spec: LocSpec, rows: list, results: dict) -> str:
    """How far the choosing split can rank: a photograph's worth on each split, the correlation of
    the two errors over all candidates, and what the next candidates within 5 photographs of the
    choice score on report_split."""
    held, folder, net, val = rows[0]
    n_held, n_val = results[f"{folder}/{net}"]["tune"]["images"], val["images"]
    text = f"One photograph is {100 / n_val:.1f} points on `{spec.report_split}`"
    text += f" and {100 / n_held:.1f} on `{spec.choose_split}`"
    errors = np.array([[h, v["dense"]["top1"]] for h, *_, v in rows])
    if len(rows) > 2 and errors.std(axis=0).all():  # a correlation needs spread on both splits
        r = np.corrcoef(errors.T)[0, 1]
        text += f"; over the {len(rows)} candidates the two errors correlate (Pearson r = {r:.2f})"
    near = [v["dense"]["top1"] for h, *_, v in rows[1:] if h - held <= 5 / n_held + 1e-9]
    if near:
        text += (
            f"; the {len(near)} next within 5 photographs of the choice on `{spec.choose_split}` score "
            f"{pct(min(near))}-{pct(max(near))}% on `{spec.report_split}`"
        )
    return text + "."


def render_block(spec: LocSpec, results: dict, command: str) -> str:
    """The Markdown between ``BEGIN`` and ``END`` (inclusive)."""
    rows = ranked(results)
    if not rows:
        return "\n".join([BEGIN, "", "No candidate has both summaries yet.", "", END])
    held, folder, net, _ = rows[0]
    n_held = results[f"{folder}/{net}"]["tune"]["images"]
    lines = [BEGIN, "", f"The choice among {len(rows)} candidates, by top-1 error on `{spec.choose_split}` "
             f"({n_held} photographs the nets did not train on): **{folder}**, {label(spec, folder, net)} "
             f"({pct(held)}% there).", ""]  # fmt: skip
    lines += [*choice_table(spec, rows), "", noise_line(spec, rows, results), ""]
    lines += [
        f"The first {min(spec.show, len(rows))} candidates by their error on `{spec.choose_split}`:",
        "",
    ]
    lines += [f"| run | net | top-1 on {spec.choose_split} (%) | top-1 on {spec.report_split} (%) |"]
    lines.append("| --- | --- | --- | --- |")
    for h, f, n, v in rows[: spec.show]:
        mark = " **(chosen)**" if h == held else ""
        lines.append(f"| {f} | {label(spec, f, n)}{mark} | {pct(h)} | {pct(v['dense']['top1'])} |")
    where = f"; {spec.hardware}" if spec.hardware else ""
    lines += ["", f"`{command}` (summaries in `{spec.results_dir or spec.out_dir}`{where})."]
    return "\n".join([*lines, "", END])
