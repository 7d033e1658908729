"""``verydeep study --config PLAN`` for the plans beside the Section 4 grid (``study/plans.py``):
a fine-tuning plan, a data-parallel plan, a transfer plan, a localisation plan.

Each runs what has no summary yet (resumable: ``--report-only`` runs nothing), then rewrites the
results block of the plan's report from the committed summaries; the prose around it stays.
"""

from __future__ import annotations

import argparse


def _module(kind: str):  # one of four modules with the same four names
    from ..study import ddp_study, finetune_report, loc_report, transfer_report

    return {
        "finetune_study": finetune_report,
        "ddp_study": ddp_study,
        "transfer_study": transfer_report,
        "localization_study": loc_report,
    }[kind]


def run(args: argparse.Namespace, kind: str) -> int:
    """Every plan kind the same way: its ``Spec``, ``run_plan``, ``render_block`` and markers."""
    from ..study.plans import splice
    from .study_block import report_path, write_block

    if args.estimate:
        raise ValueError(f"--estimate applies to Section 4 grids, not to a {kind} plan")
    mod = _module(kind)
    spec = mod.Spec.from_toml(args.config, quick=args.quick)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.results_dir is not None:
        spec.results_dir = args.results_dir
    if args.only is not None:
        return _run_only(mod, spec, args, kind)
    report = report_path(args.report, spec.report)
    results = mod.run_plan(spec, progress=not args.no_progress, report_only=args.report_only)
    if not results:
        raise ValueError(f"no finished runs in {spec.results_dir or spec.out_dir} to report on")
    command = f"verydeep study --config {args.config}" + (" --quick" if args.quick else "")
    block = mod.render_block(spec, results, command)
    write_block(report, block, spec.title, lambda doc, b: splice(doc, b, mod.BEGIN, mod.END))
    return 0


def _run_only(mod, spec, args: argparse.Namespace, kind: str) -> int:  # mod: a plan module; spec: its Spec
    """``--only A,B``: those entries of a transfer or localisation plan, no report (runs side by
    side must not race to write it; ``--report-only`` writes it after)."""
    import sys

    from .values import only_names

    if not hasattr(mod, "entry_names"):
        raise ValueError(
            f"--only applies to Section 4 grids and transfer or localisation plans, not to a {kind} plan"
        )
    names = only_names(args.only, mod.entry_names(spec), "entry", "D-256,A-256")
    mod.run_plan(spec, progress=not args.no_progress, only=names)
    print(f"study: done {', '.join(names)}; write the report with --report-only", file=sys.stderr)
    return 0
