"""``verydeep study --config PLAN`` where PLAN is a fine-tuning plan (``[finetune_study]``).

Runs every row on every data set (resumable: a run with a summary is skipped), then rewrites the
results block of the plan's report (``<!-- finetune-study results: begin -->`` ... ``end``) from
the committed summaries; the prose around it is the report's own.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..study.finetune_plan import FinetuneSpec
    from ..study.finetune_report import render_block, splice
    from ..study.finetune_runner import run_finetune_study
    from .study_block import report_path, write_block

    if args.estimate or args.only is not None:
        raise ValueError("--estimate and --only apply to Section 4 grids, not to a fine-tuning plan")
    spec = FinetuneSpec.from_toml(args.config, quick=args.quick)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.results_dir is not None:
        spec.results_dir = args.results_dir
    report = report_path(args.report, spec.report)
    results = run_finetune_study(spec, progress=not args.no_progress, report_only=args.report_only)
    if not any(k != "starts" for k in results):
        raise ValueError(f"no finished runs in {spec.results_dir or spec.out_dir} to report on")
    block = render_block(spec, results)
    write_block(report, block, spec.title, splice)
    return 0
