"""The study report: targets, the findings of Section 4 checked against the noise, and render().

The noise level of an error is the larger of (a) the run-to-run standard deviation, pooled over
the pairs of a net and its retraining with another seed (``repeat_runs``), and (b) the binomial
standard error sqrt(p(1-p)/n) of the reported split. A difference counts only if it exceeds
twice that level; otherwise it is called noise. Two evaluations of one trained net (single- vs
multi-scale, dense vs multi-crop) share the net's training luck and the images, so they are judged
against the paired standard error of their difference instead (``paired_se``), as McNemar's test does.

Example:
    >>> from verydeep.study.report import verdict
    >>> verdict(0.080, 0.070, noise=0.002)  # first should be worse (higher error) than second
    'holds'
    >>> verdict(0.0705, 0.070, noise=0.002)
    'noise'
"""

from __future__ import annotations

import math

import numpy as np

from .plan import JITTERED
from .tables import (
    CENTRE,
    PROTOCOL,
    by_validation,
    ensemble_error,
    ensemble_table,
    extra_table,
    pct,
    retrain_lines,
    tables,
    timing_table,
    top1,
)


def verdict(worse: float, better: float, noise: float) -> str:
    """'holds' if ``worse`` exceeds ``better`` by more than 2 noise, 'reversed' if the opposite."""
    if worse - better > 2 * noise:
        return "holds"
    if better - worse > 2 * noise:
        return "reversed"
    return "noise"


def noise_level(results: dict) -> dict:
    """Seed s.d. pooled over (net, net-seedN) pairs, binomial s.e., and the larger of the two."""
    pairs = []
    for name, r in results.items():
        base = name.rsplit("-seed", 1)[0]
        if r["run"].group == "repeat" and base in results:
            pairs.append(
                (base, name, top1(results, base, "single/dense"), top1(results, name, "single/dense"))
            )
    # each pair (a, b) estimates the variance as (a - b)^2 / 2
    sd = math.sqrt(sum((a - b) ** 2 / 2 for *_, a, b in pairs) / len(pairs)) if pairs else 0.0
    ref = next((n for n in ("D-256", "A-256") if n in results), next(iter(results)))
    p = top1(results, ref, "single/dense")
    n = len(results[ref]["eval"]["labels"])
    binom = math.sqrt(p * (1 - p) / n)
    seed_pairs = [{"nets": [a, b], "top1_err": [ea, eb]} for a, b, ea, eb in pairs]
    return {"seed_sd": sd, "binomial_se": binom, "noise": max(sd, binom), "pairs": seed_pairs, "n": n}


def paired_difference(x: object, y: object) -> tuple[float, float | None]:
    """Mean of the per-image difference x - y (0/1 errors or hits on the same images) and the
    standard error of that mean, its s.d. / sqrt(n) (None for a single image)."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(d.mean()), (float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None)


def paired_se(results: dict, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    """Standard error of the difference of two top-1 errors measured on the same images: the
    per-image difference of the two (0/1) errors, its s.d. / sqrt(n). ``a``, ``b``: (net, key)."""
    ra, rb = results.get(a[0]), results.get(b[0])
    if ra is None or rb is None or a[1] not in ra["eval"] or b[1] not in rb["eval"]:
        return None
    labels = ra["eval"]["labels"]
    wrong = [(r["eval"][k]["probs"].argmax(1) != labels).numpy() for r, k in ((ra, a[1]), (rb, b[1]))]
    return paired_difference(*wrong)[1]


def _row(claim: str, worse: tuple[str, float | None], better: tuple[str, float | None], noise: tuple) -> dict:
    """A claim as data: (label, top-1 error) of each side, (noise, its kind), and the verdict."""
    row: dict = {"claim": claim, "worse": worse[0], "better": better[0]}
    row |= {"worse_err": worse[1], "better_err": better[1], "noise": noise[0], "noise_kind": noise[1]}
    done = worse[1] is not None and better[1] is not None and noise[0] is not None
    row["verdict"] = verdict(worse[1], better[1], noise[0]) if done else "not run"
    return row


def _finding(
    results: dict, claim: str, worse: tuple[str, str, str], better: tuple[str, str, str], noise: float
) -> dict:
    """One claim as data. ``worse``/``better``: (label, net, eval key). Two evaluations of one
    trained net differ only by the test method, so their noise is the paired s.e. on the same
    images; two trained nets differ also by their training's luck: the study's noise level."""
    same_net = worse[1] == better[1]
    kind = (paired_se(results, worse[1:], better[1:]), "paired s.e.") if same_net else (noise, "noise level")
    w, b = (worse[0], top1(results, *worse[1:])), (better[0], top1(results, *better[1:]))
    return _row(claim, w, b, kind)


def finding_rows(results: dict, noise: float) -> list[dict]:
    """Each of Section 4's claims with its numbers, the noise it is judged against and its verdict."""
    e = lambda name, key="single/dense": (name, name, key)  # noqa: E731
    m = lambda name, method: (f"{name} {method}", name, f"multi/{method}")  # noqa: E731
    f = lambda claim, worse, better: _finding(results, claim, worse, better, noise)  # noqa: E731
    rows = [
        f("LRN does not help (A-LRN not better than A)", e("A-LRN-256"), e("A-256")),
        f("error falls with depth (A -> D)", e("A-256"), e("D-256")),
        f("error falls with depth (B -> E)", e("B-256"), e("E-256")),
        f("1x1 convs help less than 3x3 (C vs D)", e("C-256"), e("D-256")),
    ]
    rows[0]["verdict"] = {"holds": "A-LRN worse: holds", "noise": "same within noise: holds"}.get(
        rows[0]["verdict"], rows[0]["verdict"].replace("reversed", "A-LRN better: does not hold")
    )
    rows += [
        f(f"scale jittering helps ({c}: S=384 vs [256,512])", e(f"{c}-384"), e(f"{c}-jit")) for c in JITTERED
    ]
    rows += [
        f("multi-scale testing helps (D-256)", e("D-256"), e("D-256", "multi/dense")),
        f("multi-scale testing helps (D-jit)", e("D-jit"), e("D-jit", "multi/dense")),
        f("multi-crop slightly better than dense (D-jit)", m("D-jit", "dense"), m("D-jit", "multicrop")),
    ]
    for c in JITTERED:
        j = f"{c}-jit"
        rows.append(
            f(f"dense and multi-crop are complementary ({j})", m(j, "multicrop"), m(j, "dense+multicrop"))
        )
    rows += [_ensemble_finding(results, noise)]
    rows += [f("initialisation from net A vs Glorot (D, S=256)", e("D-256-glorot"), e("D-256"))]
    return rows


def _ensemble_finding(results: dict, noise: float) -> dict:
    """The best pair by validation against its better net, both multi-scale dense."""
    ranked = by_validation(results)[:2]
    claim = "ensembles help (best pair by validation vs its better net, multi-scale)"
    single = top1(results, ranked[0], PROTOCOL) if ranked else None
    pair = ensemble_error(results, ranked, PROTOCOL)[0] if len(ranked) == 2 else None
    w, b = (ranked[0] if ranked else "", single), (" + ".join(ranked), pair)
    return _row(claim, w, b, (noise, "noise level"))


def findings(results: dict, noise: float) -> list[str]:
    """The claims as a Markdown table."""
    out = [
        "| claim (paper) | here: expected worse vs expected better (top-1 error) | noise (s.e.) | verdict |",
        "|---|---|---|---|",
    ]
    for r in finding_rows(results, noise):
        if r["verdict"] == "not run":
            out.append(f"| {r['claim']} | not run | — | — |")
            continue
        nums = f"{r['worse']} {pct(r['worse_err'])}% vs {r['better']} {pct(r['better_err'])}%"
        out.append(f"| {r['claim']} | {nums} | {pct(r['noise'])}% ({r['noise_kind']}) | {r['verdict']} |")
    return out


def schedule_ends(results: dict) -> dict[str, bool]:
    """For every grid net: did its plateau schedule stop it before the epoch cap?"""
    out = {}
    for name, r in results.items():
        if r["run"].group in ("main", "init", "repeat") and r.get("result") and r.get("config"):
            out[name] = r["result"]["epochs"] < r["config"]["train"]["epochs"]
    return out


def target_summary(results: dict, spec) -> dict:
    """The targets as data: each with its value, the target and whether it is met.

    Single net: the lowest *validation* error (the held-out 10% of the training split, centre
    crop, measured during training), tested with multi-scale dense evaluation. Ensemble: the two
    nets with the lowest validation errors (the paper's best ensemble is also two nets), same
    protocol. The reported split chooses nothing.
    """
    ranked = by_validation(results)
    out: dict = {}
    if ranked:
        acc = 1 - results[ranked[0]]["eval"][PROTOCOL]["top1_err"]
        out["single"] = {"net": ranked[0], "value": acc, "target": spec.target_single}
        out["single"]["met"] = acc >= spec.target_single
    if len(ranked) >= 2:
        acc = 1 - ensemble_error(results, ranked[:2], PROTOCOL)[0]
        out["ensemble"] = {"nets": ranked[:2], "value": acc, "target": spec.target_ensemble}
        out["ensemble"]["met"] = acc >= spec.target_ensemble
    ends = schedule_ends(results)
    if ends:
        stopped = sorted(n for n, ok in ends.items() if ok)
        out["schedule_ends"] = {"value": f"{len(stopped)} of {len(ends)}", "target": "every grid net"}
        out["schedule_ends"] |= {
            "met": len(stopped) == len(ends),
            "not_ended": sorted(set(ends) - set(stopped)),
        }
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def targets(results: dict, spec) -> list[str]:
    """The targets as Markdown lines, then ensembles shown for information only."""
    t = target_summary(results, spec)
    if "ensemble" not in t:
        return ["- targets: fewer than two nets have a validation error yet"]
    s, e = t["single"], t["ensemble"]
    lines = [
        f"- single net: {s['net']} (lowest validation error, {100 * results[s['net']]['val_err']:.2f}%), "
        f"multi-scale dense: {spec.test_name} accuracy **{100 * s['value']:.2f}%** "
        f"(target {100 * s['target']:g}%: {_met(s['met'])})",
        f"- ensemble: {' + '.join(e['nets'])} (the two lowest validation errors), multi-scale dense: "
        f"{spec.test_name} accuracy **{100 * e['value']:.2f}%** "
        f"(target {100 * e['target']:g}%: {_met(e['met'])})",
    ]
    if "schedule_ends" in t:
        se = t["schedule_ends"]
        left = f"; still at the epoch cap: {', '.join(se['not_ended'])}" if se["not_ended"] else ""
        lines.append(
            f"- grid nets stopped by the plateau rule itself: {se['value']} ({_met(se['met'])}{left})"
        )
    acc = lambda names: 100 * (1 - ensemble_error(results, names, PROTOCOL)[0])  # noqa: E731
    all_main = [n for n, r in results.items() if r["run"].group == "main" and PROTOCOL in r["eval"]]
    info = [f"all {len(all_main)} nets of Table 4 {acc(all_main):.2f}%"] if all_main else []
    if all(n in results for n in ("D-jit", "E-jit")):
        info.append(f"the paper's pair D-jit + E-jit {acc(['D-jit', 'E-jit']):.2f}%")
    return [
        *lines,
        *(
            [f"- for information, not choices (multi-scale dense accuracy): {'; '.join(info)}"]
            if info
            else []
        ),
    ]


def centre_line(results: dict, spec) -> list[str]:
    """The centre-crop single-scale accuracy of the best net: the number leaderboards quote."""
    ranked = [n for n in by_validation(results) if CENTRE in results[n]["eval"]]
    refs = [n for n, r in results.items() if r["run"].group == "reference" and CENTRE in r["eval"]]
    if not ranked:
        return []
    acc = lambda n: f"{100 * (1 - results[n]['eval'][CENTRE]['top1_err']):.2f}%"  # noqa: E731
    parts = [f"{ranked[0]} (best by validation) {acc(ranked[0])}"] + [
        f"{n} (reference recipe) {acc(n)}" for n in refs
    ]
    out = f"- centre crop, single scale, no flip ({spec.test_name} accuracy): {'; '.join(parts)}"
    return [out + (f". For scale: {spec.reference_note}." if spec.reference_note else ".")]


def _missing(results: dict, spec) -> list[str]:
    from .plan import build_plan

    left = [r.name for r in build_plan(spec) if r.name not in results]
    if not left:
        return []
    return [f"**Not finished yet** (this report covers the runs done so far): {', '.join(left)}.", ""]


def render(results: dict, spec, command: str, figures: list[str], notes: str = "") -> str:
    """The whole Markdown report; ``notes``: the path of the study's notes (how its numbers came
    about), which the report links to."""
    nz = noise_level(results)
    pairs = "; ".join(
        f"{p['nets'][0]} {pct(p['top1_err'][0])}% / {p['nets'][1]} {pct(p['top1_err'][1])}%"
        for p in nz["pairs"]
    )
    out = [
        f"# Results: the paper's study (Tables 3-6) on {spec.title}",
        "",
        f"Reproduce with `{command}` (resumable; the numbers below are from that run).",
        "",
        *([f"Hardware: {spec.hardware}", ""] if spec.hardware else []),
        *_missing(results, spec),
        f"Reported on: {spec.title} {spec.test_name} split, {nz['n']} images, which chooses nothing. Nets: "
        f"`{' '.join(spec.base)}`; at most {spec.scratch_epochs} epochs from scratch, at most "
        f"{spec.finetune_epochs} per fine-tuning stage from lr {spec.finetune_lr}. Scales are in paper "
        "units (pixels at a 224 crop), scaled to the crop size. Errors are top-1 unless marked.",
        "",
        f"Noise level: seed s.d. {100 * nz['seed_sd']:.2f}% pooled over {len(nz['pairs'])} pair(s) "
        f"({pairs or 'none yet'}); binomial s.e. {100 * nz['binomial_se']:.2f}%. A difference counts if it "
        f"exceeds 2 x {100 * nz['noise']:.2f}%; between two evaluations of one net, 2 x the paired "
        "s.e. of their difference on the same images.",
        "",
        "## Targets",
        *targets(results, spec),
        *centre_line(results, spec),
        "",
        *(
            [f"How these numbers came about (machines, interruptions, retrainings): `{notes}`.", ""]
            if notes
            else []
        ),
        *tables(results),
        *extra_table(results),
        *ensemble_table(results),
        "",
        "## Section 4's findings, here",
        "",
        *findings(results, nz["noise"]),
        "",
        "## Training curves and cost",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
        *timing_table(results),
        *retrain_lines(results),
    ]
    return "\n".join(out) + "\n"
