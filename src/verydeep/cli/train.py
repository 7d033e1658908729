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
from .values import path_arg

FLAGS = [  # (flag, metavar, config key, type, help)
    ("--data", "ROOT", "data.root", path_arg,
     "class folders (root/train, root/val), a VOC tree or Fashion-MNIST; sets data.dataset by the layout"),
    ("--init-from", "CKPT", "train.init_from", path_arg,
     "checkpoint to fine-tune (its shape and input convention are kept)"),
    ("--out", "DIR", "train.out_dir", path_arg, "run directory (resumed if it holds a checkpoint)"),
    ("--epochs", "N", "train.epochs", int, "at most this many epochs (the schedule may stop earlier)"),
    ("--batch-size", "N", "optim.batch_size", int, "global batch (summed over ranks)"),
    ("--lr", "LR", "optim.lr", float, "learning rate (default: 0.01 from scratch, 0.001 to fine-tune)"),
    ("--layers", "{all,fc,fc8}", "finetune.layers", str, "which layers a fine-tune trains"),
]  # fmt: skip


def _short_sets(args: argparse.Namespace) -> list[str]:
    """The short flags as ``--set`` items; a key given both ways is a one-line error."""
    given = {s.partition("=")[0].strip() for s in args.set}
    sets = []
    for flag, _, key, _, _ in FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if key in given:
            raise ValueError(f"{flag} and --set {key}=... both set {key}; give one")
        sets.append(f"{key}={value}")
        if key == "data.root" and "data.dataset" not in given:
            from ..data.build import dataset_kind

            sets.append(f"data.dataset={dataset_kind(value)}")
    return sets


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
  verydeep train --data ~/photos --init-from vgg16.safetensors --out runs/photos   fine-tune a VGG you hold
  torchrun --nproc_per_node=8 -m verydeep train --config run.toml        data-parallel on 8 GPUs
exit codes: 0 done, 2 bad command/config/data/output (nothing written), 3 diverged, 130 interrupted""",
    )
    add_config_args(p)
    short = p.add_argument_group("short flags", "each sets one config key (not also given with --set)")
    for flag, metavar, key, kind, text in FLAGS:
        short.add_argument(flag, type=kind, metavar=metavar, help=f"{key}: {text}")
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
    cfg = RunConfig.from_sources(args.config, [*_short_sets(args), *args.set])
    if args.print_config:
        from ..finetune import adopt_source, read_source

        cfg = adopt_source(cfg, read_source(cfg))  # as the run would: the source's shape, the rate
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
