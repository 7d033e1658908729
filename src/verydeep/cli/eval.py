"""``verydeep eval CKPT [CKPT...] --data DIR``: the paper's test protocol (Tables 3-6)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# heavy imports (torch, torchvision) happen in run(): building the parser must stay cheap
from .values import THREADS, add_dense_args, add_precision_args, device, int_range, path_arg, scales_arg


def add_method_args(p: argparse.ArgumentParser, default_method: str) -> None:
    """Options shared by ``eval`` and ``predict``."""
    p.add_argument(
        "--method",
        default=default_method,
        help="comma list of centre | dense | multicrop | dense+multicrop (default %(default)s)",
    )
    p.add_argument(
        "--scales",
        default="multi",
        type=scales_arg,
        help="test scales Q in paper units (pixels at crop 224), e.g. 256,384,512; 'multi' "
        "(default: S-32,S,S+32 or Smin,mid,Smax from the checkpoint) or 'single' (S or mid)",
    )
    p.add_argument(
        "--average",
        choices=["scores", "softmax"],
        help="dense: average the score map then soft-max (scores, the paper's and the default) or "
        "soft-max then average",
    )
    add_dense_args(p, default=None)
    p.add_argument("--no-flip", action="store_true", help="do not average in horizontal flips")
    p.add_argument(
        "--grid",
        type=int_range(1, 32),
        help="multi-crop grid side: 5 (the default) gives 5x5 crops x 2 flips = 50 per scale",
    )
    p.add_argument(
        "--device", type=device, default="auto", help="auto (cuda if available), cpu, cuda, cuda:N"
    )
    add_precision_args(p)
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format: the same numbers, faster on CPU (--no-channels-last: NCHW)",
    )
    p.add_argument("--threads", type=THREADS, help="CPU threads for torch (1 is fastest on a busy machine)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints (dense / multi-crop / multi-scale / ensemble)",
        description="The paper's test protocol (Tables 3-6): top-1/top-5 error of each net "
        "and of their ensemble.",
        epilog="""examples:
  verydeep eval D.safetensors --data ~/data/imagenet/val                  dense, 3 scales, flips
  verydeep eval D.safetensors --data val --method dense,multicrop,dense+multicrop --scales 256,384,512
  verydeep eval D.safetensors E.safetensors --data val --csv results.csv   two nets and their ensemble""",
    )
    p.add_argument(
        "checkpoints", nargs="+", metavar="CKPT", help="several = also their ensemble", type=path_arg
    )
    p.add_argument(
        "--data",
        required=True,
        help="ImageFolder directory, VOC root (see --split) or 'fashion-mnist[:ROOT]'",
        type=path_arg,
    )
    p.add_argument(
        "--split",
        help="VOC root: ImageSets/Main split, e.g. val (default) or train[80%%:]; ImageFolder: a "
        "sub-folder, e.g. val (default: the folder itself)",
    )
    add_method_args(p, "dense")
    p.add_argument(
        "--batch-size", type=int_range(1), default=64, help="crops per forward pass (dense: same pixels)"
    )
    p.add_argument(
        "--workers",
        type=int_range(0, 256),
        help="image decoding processes (default: 2 on the CPU, the cores but one on a GPU)",
    )
    p.add_argument("--limit", type=int_range(1), help="evaluate only this many images, spread evenly")
    p.add_argument("--full-decode", action="store_true", help="no reduced-size JPEG decoding")
    p.add_argument("--json", action="store_true", help="print the full results as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write one CSV row per net and method", type=path_arg)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def setup(args: argparse.Namespace) -> str:
    """Apply --threads; resolve --device (auto: cuda if there is one; a missing GPU is an error)."""
    import torch

    from ..distributed import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return str(resolve_device(args.device, what="--device"))


def options(args: argparse.Namespace, device: str):
    """The EvalOptions the flags ask for; a flag that no chosen method reads is refused."""
    from ..evaluation import EvalOptions
    from ..evaluation.runner import parse_methods

    check_applicable(args, parse_methods(args.method))
    given = {k: getattr(args, k) for k in ("average", "dense_align", "grid") if getattr(args, k) is not None}
    return EvalOptions(
        methods=args.method,
        scales=args.scales,
        **given,
        flip=not args.no_flip,
        device=device,
        precision=args.precision,
        calibrate=args.calibrate,
        channels_last=args.channels_last,
        batch_size=getattr(args, "batch_size", 64),
        workers=_workers(args),
        fast_decode=not getattr(args, "full_decode", False),
        exif=not args.no_exif,
        limit=getattr(args, "limit", None),
        progress=not getattr(args, "quiet", True) and sys.stderr.isatty(),
    )


def _workers(args: argparse.Namespace) -> int:
    """--workers; -1 (from the cores) when not given (None: so that eval can tell a given one);
    predict has none."""
    workers = getattr(args, "workers", 0)
    return -1 if workers is None else workers


def check_applicable(args: argparse.Namespace, methods: list[str]) -> None:
    """--grid shapes multi-crop only, --average and --dense-align the dense method only (and
    predict's heat map, a dense map), --no-flip all but the centre crop: given with none of them,
    they were ignored without a word."""
    parts = {p for m in methods for p in m.split("+")}
    reads = {
        "--grid": "multicrop" in parts,
        "--average": "dense" in parts,
        "--dense-align": "dense" in parts or bool(getattr(args, "heatmap", None)),
        "--no-flip": parts != {"centre"},  # the centre crop is never flipped (torchvision's baseline)
    }
    given = lambda f: getattr(args, f[2:].replace("-", "_")) not in (None, False)  # noqa: E731
    unused = [f for f, read in reads.items() if not read and given(f)]
    if unused:
        verb = "has" if len(unused) == 1 else "have"
        raise ValueError(f"{', '.join(unused)} {verb} no effect with --method {','.join(methods)}")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, format_csv, format_table
    from ..evaluation.data import is_fashion_mnist
    from ..io.files import atomic_write, output_target

    if args.csv:
        output_target(args.csv)  # a bad output path fails before the pass, not after it
    photo_flags = {"--no-exif": args.no_exif, "--full-decode": args.full_decode, "--workers": args.workers}
    given = [f for f, v in photo_flags.items() if v not in (None, False)]  # each reads photo files only
    if is_fashion_mnist(args.data) and given:
        raise ValueError(f"{given[0]} has no effect on Fashion-MNIST (arrays, not photo files)")
    res = evaluate(args.checkpoints, args.data, options(args, setup(args)), split=args.split)
    res.pop("posteriors")
    res.pop("labels")
    if args.csv:
        atomic_write(Path(args.csv), format_csv(res["rows"]).encode())
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['data']}: {res['n_images']} images, {len(res['classes'])} classes", end="")
    print(f", {res['skipped']} unreadable skipped" if res["skipped"] else "")
    print(format_table(res["rows"], res["methods"]))
    shares = {r["net"]: r["rechecked_share"] for r in res["rows"] if "rechecked_share" in r}
    for net, share in shares.items():
        print(f"{net}: int8-checked recomputed {100 * share:.1f}% of its posteriors in fp32 (near-ties)")
    return 0
