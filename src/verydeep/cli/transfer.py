"""``verydeep transfer``: one-vs-rest linear SVMs on descriptor files; mAP or mean class recall."""

from __future__ import annotations

import argparse
import json

from ..transfer import SVMConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="linear SVMs on `verydeep features` files (VOC mAP / Caltech recall)",
        description="One-vs-rest linear SVMs on descriptor files (Appendix B): VOC mAP or mean class recall.",
        epilog="""examples:
  verydeep transfer voc-train.safetensors voc-test.safetensors
  verydeep transfer c101.npz --per-class 30 --test-per-class 50 --splits 3      Caltech-101 protocol""",
    )
    p.add_argument("train", help="descriptor file of the training split")
    p.add_argument("test", nargs="?", help="descriptor file of the test split (Caltech: optional)")
    p.add_argument("--cs", type=float, nargs="+", default=list(SVMConfig.cs), help="candidate C values")
    p.add_argument("--val-fraction", type=float, default=SVMConfig.val_fraction, help="held out to pick C")
    p.add_argument(
        "--loss",
        choices=["squared_hinge", "hinge"],
        default=SVMConfig.loss,
        help="SVM loss: L2-SVM or L1-SVM",
    )
    p.add_argument("--ap", choices=["voc07", "area", "raw"], default=SVMConfig.ap, help="AP definition")
    p.add_argument("--per-class", type=int, default=0, help="Caltech: training images per class (0: all)")
    p.add_argument("--test-per-class", type=int, default=0, help="Caltech: at most this many test (0: all)")
    p.add_argument("--splits", type=int, default=3, help="Caltech: number of random splits")
    p.add_argument("--seed", type=int, default=0, help="seed of the C split and of the Caltech splits")
    p.add_argument("--json", help="also write the full result (per class, per C, per split) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.features import load_descriptors
    from ..transfer import run_transfer

    cfg = SVMConfig(tuple(args.cs), args.val_fraction, args.loss, args.ap, seed=args.seed)
    train = load_descriptors(args.train)
    test = load_descriptors(args.test) if args.test else None
    r = run_transfer(train, test, cfg, args.per_class, args.test_per_class or None, args.splits)
    print(r["summary"])
    for name, v in zip(r["classes"], r["per_class"], strict=True):
        print(f"  {name:20} {100 * v:6.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return 0
