"""``verydeep study``: train and evaluate the Section 4 grid, then write its report; or run a plan
(``cli/plan_study.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .values import only_names, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="reproduce Section 4 (Tables 3-6), or run a plan: fine-tuning, data-parallel, transfer, "
        "localisation (resumable)",
        description="Train and evaluate a Section 4 grid or run a plan from a TOML, then write its report.",
        epilog="""examples:
  verydeep study --config experiments/imagewoof.toml --estimate        hours, before committing to them
  verydeep study --config experiments/imagewoof.toml --only A-256,B-256
  verydeep study --config experiments/imagewoof.toml --report-only     re-render from the summaries
  verydeep study --config experiments/finetune.toml                    a fine-tuning plan
  verydeep study --config experiments/localization.toml --report-only  a plan's tables, from its summaries""",
    )
    p.add_argument("--config", default="experiments/study.toml", help="study TOML")
    p.add_argument("--quick", action="store_true", help="tiny settings from the [quick] section (CI)")
    p.add_argument("--report", help="Markdown report path (by default the config's)", type=path_arg)
    p.add_argument("--out-dir", help="where the runs go (by default the config's)", type=path_arg)
    p.add_argument(
        "--results-dir",
        help="where the runs' committed summaries go (by default the config's; '' keeps none)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="train nothing: time a few steps of each run here and estimate the whole study's hours",
    )
    p.add_argument(
        "--only",
        help="comma-separated entries to make, without the report: a grid's runs (e.g. D-jit,E-jit; also "
        "for --estimate), a transfer plan's sources, a localisation plan's runs and fusions",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..study.plan import StudySpec, build_plan
    from ..study.plans import plan_kind
    from ..study.runner import run_study

    kind = plan_kind(args.config)
    if kind != "study":
        from .plan_study import run as run_plan

        return run_plan(args, kind)
    spec = StudySpec.from_toml(args.config, quick=args.quick)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.results_dir is not None:
        spec.results_dir = args.results_dir
    names = None
    if args.only is not None:
        names = only_names(args.only, [r.name for r in build_plan(spec)], "run", "D-jit,E-jit")
    if args.estimate:
        return _estimate(spec, names)
    if names:
        run_study(spec, progress=not args.no_progress, only=names)
        print(f"study: done {', '.join(names)}; write the report with --report-only", file=sys.stderr)
        return 0
    results = run_study(spec, progress=not args.no_progress, report_only=args.report_only)
    if not results:
        raise ValueError(f"no finished runs in {spec.results_dir or spec.out_dir} to report on")
    command = f"verydeep study --config {args.config}" + (" --quick" if args.quick else "")
    _write_report(spec, results, Path(args.report or spec.report), command)
    return 0


def _write_report(spec, results: dict, report: Path, command: str) -> None:
    """The Markdown report, its JSON twin (numbers, noise, targets) and its figures."""
    from ..io.files import atomic_write
    from ..io.plots import plot_study_curves
    from ..io.study_results import read_log
    from ..study.numbers import report_numbers
    from ..study.report import render
    from ..study.runner import summary_dir

    report.parent.mkdir(parents=True, exist_ok=True)
    curves = report.with_name(report.stem + "_curves.png")
    histories = {n: read_log(summary_dir(spec, n) / "log.csv") for n in results}
    plot_study_curves(histories, curves)
    figures = [curves.name]
    maps = _score_maps(spec, results, report.with_name(report.stem + "_scoremaps.png"))
    figures += [maps.name] if maps else []
    notes = spec.notes if spec.notes and Path(spec.notes).is_file() else ""
    atomic_write(report, render(results, spec, command, figures, notes).encode())
    doc = report_numbers(results, spec)
    atomic_write(report.with_suffix(".json"), json.dumps(doc, indent=1).encode())
    print(f"wrote {report} (+ .json) and {', '.join(figures)}", file=sys.stderr)


def _score_maps(spec, results: dict, path: Path) -> Path | None:
    """Dense class score maps of the best net by validation, where its weights are at hand; else
    an earlier figure stays (a fresh clone has summaries, not weights), and only where there is
    none is the next net with weights drawn."""
    from ..evaluation import open_data
    from ..io.files import atomic_write
    from ..study.figures import score_maps_png
    from ..study.runner import best_checkpoint
    from ..study.tables import by_validation

    for i, name in enumerate(by_validation(results)):
        if i == 1 and path.is_file():  # the best net's weights are gone: keep its figure
            return path
        if Path(best_checkpoint(spec, name)).is_file():
            samples = open_data(spec.test_data).samples
            if samples is None:  # in-memory data (Fashion-MNIST): no photographs to draw
                return None
            atomic_write(
                path, score_maps_png(best_checkpoint(spec, name), samples, name, readable=spec.class_names)
            )
            return path
    return path if path.is_file() else None


def _estimate(spec, names: list[str] | None) -> int:
    from ..io.files import atomic_write
    from ..study.estimate import estimate_study, estimate_table

    est = estimate_study(spec, only=names)
    print(estimate_table(est))
    path = Path(spec.out_dir) / "estimate.json"
    atomic_write(path, json.dumps(est, indent=1).encode())
    print(f"wrote {path}", file=sys.stderr)
    return 0
