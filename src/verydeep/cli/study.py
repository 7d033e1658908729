"""``verydeep study``: train and evaluate the Section 4 grid, then write docs/RESULTS.md."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="reproduce Tables 3-6 on Fashion-MNIST (resumable)")
    p.add_argument("--config", default="experiments/study.toml", help="study TOML")
    p.add_argument("--quick", action="store_true", help="tiny settings from the [quick] section (CI)")
    p.add_argument("--report", help="Markdown report path (default: from the config)")
    p.add_argument("--out-dir", help="where the runs go (default: from the config)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="train nothing: time a few steps of each run here and estimate the whole study's hours",
    )
    p.add_argument(
        "--only",
        help="comma-separated runs to train and evaluate (no report) or to --estimate, e.g. D-jit,E-jit",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.plots import plot_study_curves
    from ..study.plan import StudySpec, build_plan
    from ..study.report import render
    from ..study.runner import run_study

    spec = StudySpec.from_toml(args.config, quick=args.quick)
    if args.out_dir:
        spec.out_dir = args.out_dir
    report = Path(args.report or spec.report)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = sorted(set(names or []) - {r.name for r in build_plan(spec)})
    if unknown:
        raise ValueError(f"--only: no such runs in the plan: {', '.join(unknown)}")
    if args.estimate:
        return _estimate(spec, names)
    if names:
        run_study(spec, progress=not args.no_progress, only=names)
        print(f"study: done {', '.join(names)}; write the report with --report-only", file=sys.stderr)
        return 0
    results = run_study(spec, progress=not args.no_progress, report_only=args.report_only)
    if not results:
        raise ValueError(f"no finished runs in {spec.out_dir} to report on")
    report.parent.mkdir(parents=True, exist_ok=True)
    curves = report.with_name(report.stem + "_curves.png")
    histories = {n: _read_log(Path(spec.out_dir) / n / "log.csv") for n in results}
    plot_study_curves(histories, curves)
    command = f"verydeep study --config {args.config}" + (" --quick" if args.quick else "")
    notes = Path(spec.notes).read_text() if spec.notes and Path(spec.notes).is_file() else ""
    report.write_text(render(results, spec, command, [curves.name], notes))
    numbers = {}
    for name, r in results.items():
        evals = {k: v for k, v in r["eval"].items() if isinstance(v, dict)}
        numbers[name] = {k: {m: v[m] for m in ("top1_err", "top5_err")} for k, v in evals.items()}
        numbers[name] |= {
            "cpu_s": r["record"]["cpu_s"],
            "wall_s": r["record"]["wall_s"],
            "eval_wall_s": r["eval"].get("wall_s"),
            "val_err": r["val_err"],
        }
    text = json.dumps(numbers, indent=1)
    (Path(spec.out_dir) / "results.json").write_text(text)
    report.with_suffix(".json").write_text(text)  # beside the report: the numbers, machine-readable
    print(f"wrote {report} (+ .json) and {curves}", file=sys.stderr)
    return 0


def _estimate(spec, names: list[str] | None) -> int:
    from ..study.estimate import estimate_study, estimate_table

    est = estimate_study(spec, only=names)
    print(estimate_table(est))
    path = Path(spec.out_dir) / "estimate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(est, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]
