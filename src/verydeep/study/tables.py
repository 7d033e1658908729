"""The study's tables (Tables 3-6 analogues, the extra runs, the cost) as Markdown lines.

Example:
    >>> from verydeep.study.tables import md_table, pct
    >>> md_table("T", ["net", "top-1 %"], [["D", pct(0.0613)]])[1:]
    ['## T', '', '| net | top-1 % |', '|---|---|', '| D | 6.13 |']
"""

from __future__ import annotations

import torch

from .plan import CONFIGS, JITTERED

PROTOCOL = "multi/dense"  # the paper's default test protocol (Section 3.2), run for every net
CENTRE = "single/centre"  # one centre crop at the single scale: the number public leaderboards quote


PAPER_T3 = {  # the paper's Table 3, ILSVRC-2012 val top-1 error (%)
    **{"A-256": 29.6, "A-LRN-256": 29.7, "B-256": 28.7, "C-256": 28.1, "C-384": 28.1, "C-jit": 27.3},
    **{"D-256": 27.0, "D-384": 26.8, "D-jit": 25.6, "E-256": 27.3, "E-384": 26.9, "E-jit": 25.5},
}


def top1(results: dict, name: str, key: str) -> float | None:
    r = results.get(name)
    return None if r is None or key not in r["eval"] else r["eval"][key]["top1_err"]


def ensemble_error(results: dict, names: list[str], key: str) -> tuple[float, float]:
    """(top-1, top-5) error of the posterior average of ``names`` under ``key``."""
    probs = torch.stack([results[n]["eval"][key]["probs"] for n in names]).mean(0)
    labels = results[names[0]]["eval"]["labels"]
    top = probs.topk(min(5, probs.shape[1]), 1).indices
    return float((top[:, 0] != labels).float().mean()), float((top != labels[:, None]).all(1).float().mean())


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def md_table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown section: heading, header row, separator, rows."""
    out = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def tables(results: dict) -> list[str]:
    t3 = []
    for c in CONFIGS:
        for suffix, s, q in (("256", "256", "256"), ("384", "384", "384"), ("jit", "[256,512]", "384")):
            name = f"{c}-{suffix}"
            if name in results:
                e = results[name]["eval"]["single/dense"]
                errs = [pct(top1(results, name, CENTRE)), pct(e["top1_err"]), pct(e["top5_err"])]
                t3.append([c, s, q, *errs, str(PAPER_T3.get(name, "—"))])
    out = md_table(
        "Table 3 analogue: single test scale (dense, flip)",
        [
            "net",
            "train S",
            "test Q",
            "centre crop top-1 err %",
            "top-1 err %",
            "top-5 err %",
            "paper top-1 %",
        ],
        t3,
    )
    t4 = []
    for name, r in results.items():
        if r["run"].group == "main":
            m = r["eval"]["multi/dense"]
            single = pct(top1(results, name, "single/dense"))
            t4.append([name, str(r["run"].scale), single, pct(m["top1_err"]), pct(m["top5_err"])])
    out += md_table(
        "Table 4 analogue: multi-scale test (dense, flip, 3 scales)",
        ["net", "train S", "single-scale top-1 %", "multi-scale top-1 %", "multi-scale top-5 %"],
        t4,
    )
    t5 = []
    for name in (f"{c}-jit" for c in JITTERED):
        for method in ("dense", "multicrop", "dense+multicrop"):
            e = results.get(name, {}).get("eval", {}).get(f"multi/{method}")
            if e:
                speed = f"{e['images_per_s']:.1f}"
                row = [name, method, pct(e["top1_err"]), pct(e["top5_err"]), speed]
                t5.append([*row, f"{e['forwards_per_image']:g}"])
    return out + md_table(
        "Table 5 analogue: evaluation method (jittered nets, Q = {256, 384, 512})",
        ["net", "method", "top-1 %", "top-5 %", "images/s", "forward passes / image"],
        t5,
    )


def extra_table(results: dict) -> list[str]:
    """The runs beyond the grid (``[[study.extra]]``), with the settings that differ from it; a
    ``reference`` run (a peer recipe) is marked so."""
    rows = []
    for name, r in results.items():
        if r["run"].group in ("extra", "reference"):
            e = r["eval"]
            settings = " ".join(f"`{o}`" for o in r["run"].overrides) or "—"
            label = f"{name} (reference recipe)" if r["run"].group == "reference" else name
            rows.append(
                [label, r["run"].arch, str(r["run"].scale), settings, pct(r.get("val_err"))]
                + [pct(top1(results, name, k)) for k in (CENTRE, "single/dense", "multi/dense")]
                + [pct(e["multi/dense"]["top5_err"])]
            )
    if not rows:
        return []
    header = ["net", "config", "train S", "settings beyond the grid's", "val top-1 %", "centre crop top-1 %"]
    header += ["single-scale dense top-1 %", "multi-scale top-1 %", "multi-scale top-5 %"]
    return md_table("Beyond the grid: the extra runs (errors %)", header, rows)


def ensemble_table(results: dict) -> list[str]:
    combos = [(["D-jit", "E-jit"], "multi/dense"), (["D-jit", "E-jit"], "multi/dense+multicrop")]
    combos.append(([f"{c}-jit" for c in JITTERED], "multi/dense"))
    combos.append(([n for n, r in results.items() if r["run"].group == "main"], "multi/dense"))
    extras = [n for n, r in results.items() if r["run"].group == "extra"]
    choosable = [n for n, r in results.items() if r["run"].group != "reference"]
    if len(extras) >= 2:
        combos += [(extras, "multi/dense"), (choosable, "multi/dense")]
    combos.insert(0, (by_validation(results)[:2], "multi/dense"))  # the pair of the targets
    rows, seen = [], set()
    for names, key in combos:
        if (frozenset(names), key) in seen:  # e.g. the targets' pair is also the extras' pair
            continue
        seen.add((frozenset(names), key))
        if names and all(n in results and key in results[n]["eval"] for n in names):
            t1, t5 = ensemble_error(results, names, key)
            label = "+".join(names) if len(names) <= 3 else _group_label(results, names)
            rows.append([label, key.split("/")[1], pct(t1), pct(t5)])
    return md_table(
        "Table 6 analogue: ensembles (posteriors averaged)", ["nets", "method", "top-1 %", "top-5 %"], rows
    )


def _group_label(results: dict, names: list[str]) -> str:
    groups = {results[n]["run"].group for n in names}
    if groups == {"extra"}:
        return f"the {len(names)} extra runs"
    if groups == {"main"}:
        return f"all {len(names)} nets of Table 4"
    return f"all {len(names)} nets of the study but a reference recipe"


def timing_table(results: dict) -> list[str]:
    """Per run: training wall and CPU time over every resumed part (the epochs' checkpointed times;
    runs logged before epochs recorded CPU show the CPU of the process that finished them), and
    the evaluation's wall time."""
    lines = ["| run | started from | training wall (s), all parts | training CPU (s) | evaluation wall (s) |"]
    lines.append("|---|---|---|---|---|")
    cpu = wall = ev = 0.0
    resumed = False
    for name, r in results.items():
        src = r["run"].after or (f"net A ({r['run'].init_from_a})" if r["run"].init_from_a else "scratch")
        e = r["eval"].get("wall_s")  # absent in evaluations cached before it was recorded
        w = max(r.get("epoch_seconds", 0.0), r["record"]["wall_s"])
        logged = r.get("epoch_cpu")  # every part's, decoding workers included
        part = logged is None and w > 1.2 * r["record"]["wall_s"]  # study.json saw the last part only
        resumed |= part
        c_s = logged if logged is not None else r["record"]["cpu_s"]
        c = f"{c_s:.0f}" + (" (last part)" if part else "")
        lines.append(f"| {name} | {src} | {w:.0f} | {c} | {'—' if e is None else f'{e:.0f}'} |")
        cpu, wall, ev = cpu + c_s, wall + w, ev + (e or 0.0)
    total = f"{wall:.0f} ({wall / 3600:.1f} h)"
    lines.append(f"| total | | {total} | {cpu:.0f}{' (recorded part)' if resumed else ''} | {ev:.0f} |")
    if resumed:
        lines += [
            "",
            "Runs resumed after an interruption record CPU time only for the part that finished them; "
            "their wall time is complete, and includes any time the process was paused or shared its "
            "core (on this machine: paused for benchmarks and CI runs; epochs of over 600 s are those).",
        ]
    return lines


def retrain_lines(results: dict) -> list[str]:
    """Parents trained again because their checkpoint was gone (a new machine): the children
    start from the retrain, while the tables keep the first training's numbers."""
    rows = [(n, r) for n, r in results.items() if r.get("retrains")]
    if not rows:
        return []
    lines = ["", "Retrained parents (their weights were lost; every later child starts from the retrain):"]
    for name, r in rows:
        again = ", ".join(f"{pct(e)}% ({stamp})" for stamp, e in r["retrains"].items())
        first = pct(r["val_err"])
        lines.append(f"- {name}: best held-out error {first}% first, then {again}; same seed and config")
    return lines


def by_validation(results: dict) -> list[str]:
    """Nets that may be chosen (not a reference recipe) with a validation error, best first
    (ties: plan order)."""
    named = [
        n
        for n, r in results.items()
        if r.get("val_err") is not None and PROTOCOL in r["eval"] and r["run"].group != "reference"
    ]
    return sorted(named, key=lambda n: results[n]["val_err"])
