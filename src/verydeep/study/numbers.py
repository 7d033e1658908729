"""The study report's JSON twin: every run's errors, times and held-out error, the noise level,
the targets and the findings, as numbers (the Markdown report says the same in words).

Example:
    >>> from verydeep.study.numbers import run_numbers
    >>> from verydeep.study.plan import Run
    >>> r = {"run": Run("A-256", "A", [256], []), "record": {"cpu_s": 2.0, "wall_s": 1.0},
    ...      "eval": {"single/dense": {"top1_err": 0.3, "top5_err": 0.1, "probs": None}, "wall_s": 0.5},
    ...      "val_err": 0.31, "result": {"epochs": 9}}
    >>> run_numbers(r)["single/dense"], run_numbers(r)["epochs"]
    ({'top1_err': 0.3, 'top5_err': 0.1}, 9)
"""

from __future__ import annotations

from .report import finding_rows, noise_level, target_summary


def run_numbers(r: dict) -> dict:
    """One run's numbers from its ``load_result`` record."""
    evals = {k: v for k, v in r["eval"].items() if isinstance(v, dict)}
    out: dict = {k: {m: v[m] for m in ("top1_err", "top5_err")} for k, v in evals.items()}
    return out | {
        "group": r["run"].group,
        "cpu_s": r["record"]["cpu_s"],
        "wall_s": r["record"]["wall_s"],
        "eval_wall_s": r["eval"].get("wall_s"),
        "val_err": r["val_err"],
        "epochs": (r.get("result") or {}).get("epochs"),
        "retrains_val_err": r.get("retrains") or {},
    }


def report_numbers(results: dict, spec: object) -> dict:
    """{"runs", "noise", "targets", "findings"} of a finished (or partial) study."""
    noise = noise_level(results)
    doc = {"runs": {name: run_numbers(r) for name, r in results.items()}, "noise": noise}
    doc["targets"] = target_summary(results, spec)
    doc["findings"] = finding_rows(results, noise["noise"])
    return doc
