"""``verydeep study --config PLAN`` where PLAN is a fine-tuning plan (``[finetune_study]``).

Runs every row on every data set (resumable: a run with a summary is skipped), then rewrites the
results block of the plan's report (``<!-- finetune-study results: begin -->`` ... ``end``) from
the committed summaries; the prose around it is the report's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..io.checkpoint import atomic_write
    from ..study.finetune_plan import FinetuneSpec
    from ..study.finetune_report import render_block, splice
    from ..study.finetune_runner import run_finetune_study

    if args.estimate or args.only is not None:
        raise ValueError("--estimate and --only apply to Section 4 grids, not to a fine-tuning plan")
    spec = FinetuneSpec.from_toml(args.config, quick=args.quick)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.results_dir is not None:
        spec.results_dir = args.results_dir
    report = Path(args.report or spec.report) if (args.report or spec.report) else None
    if report is not None and report.exists() and not report.is_file():
        raise ValueError(f"--report {report} is not a file")
    results = run_finetune_study(spec, progress=not args.no_progress, report_only=args.report_only)
    if not any(k != "starts" for k in results):
        raise ValueError(f"no finished runs in {spec.results_dir or spec.out_dir} to report on")
    block = render_block(spec, results)
    if report is None:
        print(block)
        return 0
    old = report.read_text() if report.is_file() else f"# {spec.title}\n"
    atomic_write(report, splice(old, block).encode())
    print(f"wrote the results block of {report}", file=sys.stderr)
    return 0
