"""``verydeep transfer``: one-vs-rest linear SVMs on descriptor files; mAP or mean class recall."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..caltech import PROTOCOLS
from ..transfer import SVMConfig
from .values import int_range, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="linear SVMs on `verydeep features` files (VOC mAP / Caltech recall)",
        description="One-vs-rest linear SVMs on descriptor files (Appendix B): VOC mAP or mean class recall.",
        epilog="""examples:
  verydeep transfer voc-train.safetensors voc-test.safetensors
  verydeep transfer c101.npz --per-class 30 --test-per-class 50 --splits 3      Caltech-101 protocol""",
    )
    p.add_argument("train", help="descriptor file of the training split", type=path_arg)
    p.add_argument(
        "test", nargs="?", help="descriptor file of the test split (Caltech: optional)", type=path_arg
    )
    p.add_argument("--cs", type=float, nargs="+", default=list(SVMConfig.cs), help="candidate C values")
    p.add_argument(
        "--folds",
        type=int,
        default=SVMConfig.folds,
        help="cross-validation folds that choose C (0: one held-out part)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help=f"with --folds 0: held out to pick C (default {SVMConfig.val_fraction})",
    )
    p.add_argument(
        "--one-c", action="store_true", help="multi-label: one C for all classes (default: one per class)"
    )
    p.add_argument(
        "--loss",
        choices=["squared_hinge", "hinge"],
        default=SVMConfig.loss,
        help="SVM loss: L2-SVM or L1-SVM",
    )
    p.add_argument(
        "--ap", choices=["voc07", "area", "raw"], help=f"multi-label: AP definition (default {SVMConfig.ap})"
    )
    add_caltech_args(p)
    p.add_argument(
        "--drop-class",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a class out (repeat), e.g. BACKGROUND_Google for Caltech-101's 101-class setting; "
        "the paper does not say, so the background class is kept unless dropped",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the C split and of the Caltech splits")
    p.add_argument(
        "--json", help="also write the full result (per class, per C, per split) here", type=path_arg
    )
    p.add_argument(
        "--pr-curves",
        metavar="DIR",
        help="multi-label (VOC): one precision-recall PNG per class here",
        type=path_arg,
    )
    p.set_defaults(func=run)


def add_caltech_args(p: argparse.ArgumentParser) -> None:
    """The Caltech protocol's flags (single-label files; ``check_flags`` refuses them on VOC)."""
    p.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        help="the paper's Caltech setting: caltech101 = 30 train / up to 50 test per class, caltech256 = "
        "60 train / the rest; 3 splits (explicit --per-class/--test-per-class/--splits win)",
    )
    p.add_argument("--per-class", type=int_range(0), help="Caltech: training images per class (0: all)")
    p.add_argument("--test-per-class", type=int_range(0), help="Caltech: at most this many test (0: all)")
    p.add_argument("--splits", type=int_range(1, 100), help="Caltech: number of random splits (by default 3)")


def run(args: argparse.Namespace) -> int:
    from ..caltech import drop_classes
    from ..io.features import load_descriptors
    from ..io.files import atomic_write, output_target
    from ..transfer_protocol import run_transfer

    if args.json:
        output_target(args.json)  # a bad output path fails before the SVMs are trained
    if args.pr_curves and Path(args.pr_curves).exists() and not Path(args.pr_curves).is_dir():
        raise ValueError(f"--pr-curves {args.pr_curves} is not a directory")
    preset = PROTOCOLS.get(args.protocol or "", {"n_train": 0, "n_test": None, "n_splits": 3})
    n_train = preset["n_train"] if args.per_class is None else args.per_class
    n_test = preset["n_test"] if args.test_per_class is None else (args.test_per_class or None)
    n_splits = preset["n_splits"] if args.splits is None else args.splits
    if args.val_fraction is not None and args.folds != 0:
        raise ValueError(
            f"--val-fraction holds out a part with --folds 0 only; here {args.folds} folds choose C"
        )
    cfg = SVMConfig(
        cs=tuple(args.cs),
        val_fraction=SVMConfig.val_fraction if args.val_fraction is None else args.val_fraction,
        folds=args.folds,
        per_class_c=not args.one_c,
        loss=args.loss,
        ap=args.ap or SVMConfig.ap,
        seed=args.seed,
    )
    train = load_descriptors(args.train)
    test = load_descriptors(args.test) if args.test else None
    check_flags(args, multilabel=train.labels.ndim == 2, n_train=n_train)
    if args.drop_class:
        train = drop_classes(train, args.drop_class)
        test = drop_classes(test, args.drop_class) if test is not None else None
    r = run_transfer(train, test, cfg, n_train, n_test, n_splits)
    print(r["summary"])
    for name, v in zip(r["classes"], r["per_class"], strict=True):
        print(f"  {name:20} {100 * v:6.2f}")
    if args.json:
        atomic_write(args.json, json.dumps(r, indent=1).encode())
    if args.pr_curves and "pr" in r:
        from ..io.plots import pr_curve_png

        for name, ap, pr in zip(r["classes"], r["per_class"], r["pr"], strict=True):
            png = pr_curve_png(name, pr["precision"], pr["recall"], ap, cfg.ap)
            atomic_write(Path(args.pr_curves) / f"pr-{_safe(name)}.png", png)
        print(f"precision-recall curves: {args.pr_curves}/pr-<class>.png")
    return 0


def check_flags(args: argparse.Namespace, multilabel: bool, n_train: int) -> None:
    """Refuse a flag the data's task never reads, before any SVM is trained: a Caltech split
    asked of VOC files must not score the whole split instead."""
    given = lambda *names: [n for n in names if getattr(args, n.lstrip("-").replace("-", "_"))]  # noqa: E731
    if multilabel:
        unused = given("--protocol", "--per-class", "--test-per-class", "--splits")
        why = "the descriptor files are multi-label (VOC): mAP on the test file, no Caltech splits"
    else:
        unused = given("--one-c", "--ap", "--pr-curves")
        if n_train <= 0:
            unused += given("--test-per-class", "--splits")
        why = "the descriptor files are single-label: mean class recall" + (
            " on the test file (give --per-class or --protocol for Caltech splits)" if n_train <= 0 else ""
        )
    if unused:
        raise ValueError(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect here: {why}")


def _safe(name: str) -> str:
    """A class name as a file name: letters, digits, '-', '_' and '.' kept, the rest '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"
