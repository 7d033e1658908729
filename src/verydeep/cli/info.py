"""``verydeep info``: Tables 1 and 2 of the paper, regenerated from the code."""

from __future__ import annotations

import argparse
import json

from .values import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print Table 1 (configs) and Table 2 (parameters, GFLOPs)",
        description="Tables 1 and 2 of the paper, regenerated from the code.",
        epilog="examples:\n  verydeep info\n  verydeep info --size 384 --json",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--size", type=int_range(32, 4096), default=224, help="input size for the cost columns")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.summary import table1, table2

    rows = table2(size=args.size)
    if args.json:
        print(json.dumps({"table1": table1().splitlines(), "table2": rows}, indent=1))
        return 0
    print("Table 1: ConvNet configurations (convK-C: KxK conv with C channels)\n")
    print(table1())
    print(f"\nTable 2: weight layers, parameters (1000 classes) and cost at {args.size}x{args.size}")
    print("GMACs = multiply-accumulates; GFLOPs = 2 x GMACs\n")
    print(f"{'config':8} {'layers':>6} {'params':>13} {'millions':>8} {'GMACs':>7} {'GFLOPs':>7}")
    for r in rows:
        print(
            f"{r['config']:8} {r['weight_layers']:>6} {r['params']:>13,} {r['params'] / 1e6:>8.0f} "
            f"{r['gmacs']:>7.2f} {r['gflops']:>7.2f}"
        )
    return 0
