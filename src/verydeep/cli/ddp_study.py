"""``verydeep study --config PLAN`` where PLAN is a data-parallel plan (``[ddp_study]``).

Runs every row and seed under torchrun (resumable: a run with a summary is skipped), then rewrites
the results block of the plan's report (``<!-- ddp-study results: begin -->`` ... ``end``); the
prose around it is the report's own.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..study.ddp_study import DdpSpec, render_block, run_ddp_study, splice
    from .study_block import report_path, write_block

    if args.estimate or args.only is not None or args.quick:
        raise ValueError("--estimate, --only and --quick apply to Section 4 grids, not to a ddp_study plan")
    spec = DdpSpec.from_toml(args.config)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.results_dir is not None:
        spec.results_dir = args.results_dir
    report = report_path(args.report, spec.report)
    results = run_ddp_study(spec, report_only=args.report_only)
    if not results:
        raise ValueError(f"no finished runs in {spec.results_dir or spec.out_dir} to report on")
    block = render_block(spec, results, f"verydeep study --config {args.config}")
    write_block(report, block, spec.title, splice)
    return 0
