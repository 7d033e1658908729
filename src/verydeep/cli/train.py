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
    p = sub.add_parser(
        "train",
        help="train a net with the paper's recipe (works under torchrun)",
        description="Train with the paper's recipe; every setting is a config key "
        "(list them with --print-config).",
        epilog="""examples:
  verydeep train --print-config > run.toml          every key, its default and its allowed range
  verydeep train --config run.toml --set model.arch=D --set train.out_dir=runs/D
  verydeep train --set data.dataset=imagefolder --set data.root=~/data/imagenet --set "data.scale=[256, 512]"
  torchrun --nproc_per_node=8 -m verydeep train --config run.toml        data-parallel on 8 GPUs
exit codes: 0 done, 2 bad command/config/data/output (nothing written), 3 diverged, 130 interrupted""",
    )
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
    if test:  # printed once, here (the log on stderr does not repeat it)
        print(
            f"test top-1 error: {100 * test['top1_err']:.2f}%  top-5 error: {100 * test['top5_err']:.2f}% "
            f"({test['images']} images, held-out-best weights)"
        )
    return 0
