"""``verydeep train``: build the RunConfig from --config/--set and call ``train.fit``.

Exit codes: 0 done; 2 a problem with the command, config, data or output folder (one line,
nothing written); 3 training diverged (non-finite loss or gradient; the last checkpoint, taken
before it, is intact and the run can be resumed with other settings); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import RunConfig
from . import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a net with the paper's recipe (works under torchrun)")
    add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument(
        "--print-config",
        nargs="?",
        const="toml",
        choices=["toml", "json"],
        help="print the resolved config and exit: every key with its value and allowed range "
        "(toml, the default, loads back with --config) or json",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = RunConfig.from_sources(args.config, args.set)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=1) if args.print_config == "json" else cfg.to_toml(), end="")
        return 0
    from ..engine import NonFiniteLossError  # torch-heavy imports only when training
    from ..train import fit

    try:
        result = fit(cfg, progress=not args.no_progress)
    except NonFiniteLossError as e:
        print(f"verydeep train: stopped: {e}", file=sys.stderr)
        return 3
    test = result.get("test")
    if test:
        print(f"test top-1 error: {100 * test['top1_err']:.2f}%  top-5 error: {100 * test['top5_err']:.2f}%")
    return 0
