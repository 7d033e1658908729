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
        epilog="examples:\n  verydeep info\n  verydeep info --size 384 --json\n"
        "  verydeep info --layers vgg19 --size 256   every named layer's channels, stride, shape",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--size", type=int_range(32, 4096), default=224, help="input size for the cost columns")
    p.add_argument("--layers", metavar="ARCH", help="list a config's named layers (conv1_1 ... fc8) instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.layers:
        return _layers(args.layers, args.size, args.json)
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


def _layers(arch: str, size: int, as_json: bool) -> int:
    """The names ``verydeep.extract`` takes, for the full-width net at ``size`` x ``size``."""
    from ..models.arch import parse_arch
    from ..models.layers import layer_info
    from ..models.vgg import VGG

    parse_arch(arch)  # an unknown name is one line before torch builds anything
    rows = layer_info(VGG(arch, num_classes=1000).eval(), size)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"VGG {arch}: named layers at {size}x{size} (FC layers in their dense form)\n")
    print(f"{'layer':9} {'channels':>8} {'stride':>6}  shape")
    for r in rows:
        print(f"{r['name']:9} {r['channels']:>8} {r['stride']:>6}  {' x '.join(map(str, r['shape']))}")
    return 0
