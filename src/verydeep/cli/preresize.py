"""``verydeep preresize SRC DST --smallest-side S``: a smaller copy of an image tree, made once."""

from __future__ import annotations

import argparse
import os
import sys

from .values import int_range, path_arg


class _Deprecated(argparse.Action):
    """``--max-side``: the old name of ``--smallest-side`` (it always capped the smallest side)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("verydeep preresize: --max-side is deprecated, use --smallest-side", file=sys.stderr)
        namespace.smallest_side = values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preresize",
        help="copy an image tree with smallest sides capped (faster epochs)",
        description="Copy an image tree so that no image's smallest side exceeds S (faster epochs).",
        epilog="example: verydeep preresize ~/data/imagenet ~/data/imagenet-512 --smallest-side 512",
    )
    p.add_argument("src", help="ImageFolder tree (or any folder of images)", type=path_arg)
    p.add_argument("dst", help="new folder; same relative paths, JPEG files")
    side = int_range(1, 65_536)
    p.add_argument(
        "--smallest-side", type=side, help="cap on each image's smallest side, in pixels: the largest S"
    )
    p.add_argument("--max-side", type=side, action=_Deprecated, help=argparse.SUPPRESS)
    p.add_argument(
        "--quality", type=int_range(1, 100), default=90, help="JPEG quality of re-encoded images (default 90)"
    )
    p.add_argument(
        "--workers",
        type=int_range(1, 256),
        default=os.cpu_count() or 1,
        help="processes (default: one per core)",
    )
    p.add_argument("--no-exif", action="store_true", help="ignore EXIF orientation (pixels as stored)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io.preresize import check_record, check_trees, plan, preresize, settings_of

    if args.smallest_side is None:
        raise ValueError("--smallest-side S is required (the largest training S, in pixels)")
    src, dst = check_trees(args.src, args.dst)  # both checked before the tree is scanned
    check_record(dst, settings_of(args.smallest_side, args.quality, not args.no_exif))
    total = len(plan(src, dst))
    with tqdm(total=total, desc="preresize", unit="img") as bar:
        counts = preresize(
            args.src,
            args.dst,
            args.smallest_side,
            args.quality,
            args.workers,
            bar.update,
            exif=not args.no_exif,
        )
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {args.dst}")
    return 0
