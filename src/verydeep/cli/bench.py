"""``verydeep bench``: VGG speed against torchvision on this machine, as ratios from one run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench.config import PARTS, BenchConfig
from .values import device, int_range, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="speed vs torchvision's VGG: inference, training, eval, data",
        description="Speed against torchvision's VGG on this machine, as ratios measured in one run.",
        epilog="""examples:
  verydeep bench --data ~/data/imagenet/val          every part (15 min on 2 CPU cores)
  verydeep bench --only inference training --no-compile
  verydeep bench --quick                             tiny nets, seconds: a smoke test""",
    )
    p.add_argument("--quick", action="store_true", help="tiny nets, few images: seconds (for tests)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    p.add_argument(
        "--rounds",
        type=int_range(1, 1000),
        help="interleaved samples per variant, median reported (by default 3, the data part 7)",
    )
    p.add_argument(
        "--train-batch",
        type=int_range(1, 4096),
        help="training-step batch (by default 16 on a CPU, 64 on a GPU; quick: 4)",
    )
    p.add_argument(
        "--all-modes", action="store_true", help="also time bf16 where it is emulated (AVX2-only CPUs: slow)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves minutes)")
    p.add_argument(
        "--data",
        type=path_arg,
        help="your photographs, as class folders (e.g. an ImageNet val folder): the precision, eval and data "
        "parts read them and are skipped without it",
    )
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:N or auto (by default auto)")
    p.add_argument(
        "--isa",
        choices=["native", "avx2"],
        default="native",
        help="avx2: hold torch's CPU kernels (oneDNN, MKL, fbgemm) at AVX2, to measure an AVX2-only "
        "machine's modes on a bigger CPU (the bench restarts itself with their variables set)",
    )
    p.add_argument(
        "--checkpoint", type=path_arg, help="a trained net: the precision part measures agreement with it"
    )
    p.add_argument(
        "--precision-photos", type=int_range(1, 100000), help="photos the precision part compares on (500)"
    )
    p.add_argument("--save", type=path_arg, help="also write the full JSON result to this file")
    p.set_defaults(func=run)


def _restart_capped() -> None:
    """Run this same command again in a process whose kernels stop at AVX2 (they read their
    variables once, when torch loads: this process has loaded it)."""
    import os
    import sys

    from ..hardware import AVX2_ENV

    env = os.environ | AVX2_ENV
    os.execve(sys.executable, [sys.executable, "-m", "verydeep", *sys.argv[1:]], env)


def run(args: argparse.Namespace) -> int:
    from ..hardware import isa_capped

    if args.isa == "avx2" and not isa_capped():
        _restart_capped()
    if args.save:
        from ..io.files import output_target

        output_target(args.save)  # a bad path fails now, not after a quarter of an hour of timing
    if args.checkpoint:  # not after the other parts' timing
        from ..io.checkpoint import check_checkpoint_file

        check_checkpoint_file(args.checkpoint)
    cfg = BenchConfig.make(
        quick=args.quick,
        rounds=args.rounds,
        train_batch=args.train_batch,
        data_root=Path(args.data) if args.data else None,
        device=args.device,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        precision_images=args.precision_photos,
    )
    if args.no_compile:
        cfg.compile = False
    if args.rounds:
        cfg.data_rounds = args.rounds
    cfg.all_modes = args.all_modes
    from tqdm import tqdm

    from ..bench import run_bench
    from ..bench.report import format_report
    from ..io.files import atomic_write

    bar = tqdm(desc="bench", unit="call", leave=False)

    def progress(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update()

    try:
        result = run_bench(cfg, tuple(args.only or PARTS), progress)
    finally:
        bar.close()
    text = json.dumps(result, indent=1)
    if args.save:
        atomic_write(args.save, (text + "\n").encode())
    print(text if args.json else format_report(result))
    return 1 if result.get("failed") else 0  # the parts that ran are printed and saved all the same
