"""``verydeep preresize SRC DST --max-side S``: a smaller copy of an image tree, made once."""

from __future__ import annotations

import argparse
import os

from tqdm import tqdm

from ..io.preresize import plan, preresize


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preresize", help="copy an image tree with smallest sides capped (faster epochs)")
    p.add_argument("src", help="ImageFolder tree (or any folder of images)")
    p.add_argument("dst", help="new folder; same relative paths, JPEG files")
    p.add_argument("--max-side", type=int, required=True, help="largest training S, in pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    total = len(plan(Path(args.src), Path(args.dst))) if Path(args.src).is_dir() else None
    with tqdm(total=total, desc="preresize", unit="img") as bar:
        counts = preresize(args.src, args.dst, args.max_side, args.quality, args.workers, bar.update)
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {args.dst}")
    return 0
