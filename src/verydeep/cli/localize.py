"""``verydeep localize``: box-regression nets of Appendix A (train, tune, eval, predict).

The classification net that initialises them and scores their boxes comes from ``verydeep train``
(``data.dataset=voc`` trains one on a VOC set's image-level labels)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

# torch, PIL and tqdm are imported by the commands: building the parser must stay cheap
from .values import float_range, fractions, int_range, path_arg, require_png


def _dense_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--loc",
        action="append",
        required=True,
        metavar="PATH[@Q,...]",
        help="localisation net, optionally with its own test scales (repeat: union of nets)",
    )
    p.add_argument(
        "--cls",
        action="append",
        required=True,
        help="classification net that scores the boxes (repeat: an ensemble, posteriors averaged)",
    )
    p.add_argument(
        "--scales", help="test scales Q in paper units, e.g. 256,384 (default 384; not with PATH@Q nets only)"
    )
    p.add_argument("--flip", action="store_true", help="add the boxes of the mirrored image")
    p.add_argument("--measure", default="iou", choices=["iou", "centre"], help="merge closeness")
    p.add_argument("--threshold", type=float, default=0.5, help="merge while IoU >= t (centre: dist <= t)")
    p.add_argument(
        "--average", default="count", choices=["count", "pair", "score"], help="how merged boxes are averaged"
    )
    p.add_argument("--merged-score", default="sum", choices=["sum", "max"], help="score of a merged box")
    p.add_argument("--rank", default="class", choices=["class", "box"], help="how guesses are ordered")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localize",
        help="object localisation (Appendix A): train, eval, tune, predict",
        description="Box-regression nets of Appendix A, fine-tuned from a classification net.",
        epilog="""examples:
  verydeep localize train --data ~/data/VOC --init cls.safetensors --out pcr.safetensors
  verydeep localize tune --data ~/data/VOC --split 'train[80%:]' --loc pcr.safetensors --cls cls.safetensors
  verydeep localize eval --data ~/data/VOC --loc pcr.safetensors --cls cls.safetensors
  verydeep localize predict photo.jpg --loc pcr.safetensors --cls cls.safetensors --draw boxes.png""",
    )
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for add in (_train_parser, _eval_parser, _tune_parser, _predict_parser):
        add(s)
    for name in ("train", "eval", "tune"):  # the long ones; bars in a log file are noise
        s.choices[name].add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_parser(s: argparse._SubParsersAction) -> None:
    t = s.add_parser(
        "train",
        help="fine-tune a box-regression net from a classification checkpoint",
        epilog="example:\n"
        "  verydeep localize train --data VOC --init cls.safetensors --out pcr.safetensors --head pcr",
    )
    t.add_argument("--data", required=True, help="VOC-layout dataset root", type=path_arg)
    t.add_argument("--init", required=True, help="classification checkpoint (.safetensors)", type=path_arg)
    t.add_argument("--out", required=True, help="output .safetensors", type=path_arg)
    t.add_argument(
        "--head",
        default="pcr",
        choices=["scr", "pcr"],
        help="one box for all classes (scr) or one per class (pcr)",
    )
    t.add_argument(
        "--finetune", default="all", choices=["all", "fc"], help="train every layer or the FC layers only"
    )
    t.add_argument("--split", default="train", help="training split, e.g. train or train[:80%%]")
    for name, typ, default, text in (
        ("scale", int_range(224, 4096), 384, "training scale S, paper units"),
        ("steps", int_range(1), 300, "optimiser steps"),
        ("batch-size", int_range(1, 4096), 32, "photographs per step"),
        ("lr", float_range(0, 10), 1e-3, "learning rate"),
        ("seed", int, 0, "random seed"),
    ):
        t.add_argument(f"--{name}", type=typ, default=default, help=text)
    t.add_argument(
        "--box-size",
        default="linear",
        choices=["linear", "log"],
        help="width and height as the net outputs them: linear (the paper's) or log (R-CNN's: "
        "an error costs the same on a small box as on a large one)",
    )
    t.add_argument(
        "--lr-drops",
        type=fractions,
        default=(),
        metavar="F,F,...",
        help="fractions of the steps after which the rate is divided by 10, e.g. 0.5,0.75 "
        "(default: none, a constant rate)",
    )
    t.set_defaults(func=run_train)


def _eval_parser(s: argparse._SubParsersAction) -> None:
    e = s.add_parser(
        "eval",
        help="centre-crop and dense localisation error, with baselines",
        epilog="example:\n"
        "  verydeep localize eval --data VOC --loc pcr.safetensors@256,384 --cls cls.safetensors --flip",
    )
    e.add_argument("--data", required=True, help="VOC-layout dataset root", type=path_arg)
    e.add_argument("--split", default="val", help="split to evaluate")
    e.add_argument("--train-split", default="train", help="split whose mean box is a baseline")
    e.add_argument("--json", help="also write the report here", type=path_arg)
    _dense_args(e)
    e.set_defaults(func=run_eval)


def _tune_parser(s: argparse._SubParsersAction) -> None:
    u = s.add_parser(
        "tune",
        help="choose merge settings and scales on held-out photographs",
        epilog="example:\n"
        "  verydeep localize tune --data VOC --split 'train[80%:]' --loc pcr.safetensors "
        "--cls cls.safetensors",
    )
    u.add_argument("--data", required=True, help="VOC-layout dataset root", type=path_arg)
    u.add_argument(
        "--split", required=True, help="held-out split the nets did not train on, e.g. train[80%%:]"
    )
    u.add_argument(
        "--loc",
        action="append",
        required=True,
        metavar="PATH[@Q,...]",
        help="localisation net; @Q,... fixes its own test scales (repeat: boxes of all nets pooled)",
    )
    u.add_argument(
        "--cls",
        action="append",
        required=True,
        help="classification net that scores the boxes (repeat: an ensemble, posteriors averaged)",
    )
    u.add_argument(
        "--scale-sets",
        help="';'-separated scale sets to try (default 384;256,384; none with PATH@Q nets only)",
    )
    u.add_argument("--flip", action="store_true", help="also try adding the mirrored image")
    u.add_argument("--show", type=int_range(1), default=10, help="rows to print")
    u.add_argument("--json", help="also write every row here", type=path_arg)
    u.set_defaults(func=run_tune)


def _predict_parser(s: argparse._SubParsersAction) -> None:
    pr = s.add_parser(
        "predict",
        help="localise the object in one photograph",
        epilog="example:\n"
        "  verydeep localize predict photo.jpg --loc pcr.safetensors --cls cls.safetensors --draw boxes.png",
    )
    pr.add_argument("image", help="a photograph", type=path_arg)
    pr.add_argument("--draw", help="write the photograph with its boxes to this PNG", type=path_arg)
    pr.add_argument("--top", type=int_range(1), default=1, help="guesses to print and draw")
    _dense_args(pr)
    pr.set_defaults(func=run_predict)


def _dense_cfg(args: argparse.Namespace):
    from ..localization.api import dense_scales
    from ..localization.merge import MergeConfig
    from ..localization.protocol import DenseConfig

    merge = MergeConfig(args.measure, args.threshold, args.average, args.merged_score)
    return DenseConfig(dense_scales(args.loc, args.scales), args.flip, 5, args.rank, merge)


def run_train(args: argparse.Namespace) -> int:
    from ..engine import NonFiniteLossError
    from ..io.checkpoint import checkpoint_target, save_model
    from ..localization.api import fit_localizer, step_bar
    from ..localization.net import LocTrainConfig

    checkpoint_target(args.out)  # a bad output path fails before the training, not after it

    cfg = LocTrainConfig(
        head=args.head,
        finetune=args.finetune,
        scale=args.scale,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_drops=args.lr_drops,
        box_size=args.box_size,
        seed=args.seed,
    )
    bar = step_bar(cfg.steps, "localize train", not args.no_progress)
    try:
        net, meta, hist = fit_localizer(args.data, args.init, cfg, bar, args.split)
    except NonFiniteLossError as e:  # exit 3, as `verydeep train`'s; nothing is written
        print(f"verydeep localize train: stopped: {e}", file=sys.stderr)
        return 3
    save_model(args.out, net, meta)
    tail = hist["loss"][-20:]
    print(
        f"{args.out}: {cfg.head} {cfg.finetune}, last-20 mean loss {sum(tail) / len(tail):.4f}, "
        f"CPU {hist['cpu_s']:.0f} s"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..io.files import atomic_write, output_target
    from ..localization.api import evaluate_boxes, step_bar

    if args.json:
        output_target(args.json)  # before the pass, not after it
    bar = step_bar(0, "localize eval", not args.no_progress)
    r = evaluate_boxes(args.data, args.split, args.loc, args.cls, _dense_cfg(args), bar, args.train_split)
    print(f"{r['split']}: {r['images']} images, classes {r['classes']}; localisation error (%)")
    row = lambda label, err, tail="": print(f"  {label:31} {100 * err:5.1f}{tail}")  # noqa: E731
    for path, err in r["centre"].items():
        row("centre crop, GT class known", err, f"  {path}")
    for key, err in r["dense"].items():
        row(f"dense + merging, {key}", err)
    for key, err in r["baselines"].items():  # room for 100.0 beside the longest key
        row(f"baseline {key}", err)
    row("classification top-1 error", r["classification_top1_error"])
    print(f"  skipped {r['skipped']}; CPU {r['cpu_s']:.0f} s")
    if args.json:
        atomic_write(args.json, json.dumps(r, indent=1).encode())
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from ..io.files import atomic_write, output_target
    from ..localization.api import parse_scales, step_bar, tune_merging

    if args.json:
        output_target(args.json)  # before the pass, not after it
    given = args.scale_sets
    sets = None if given is None else [parse_scales(t) for t in given.split(";") if t.strip()]
    flips = [False, True] if args.flip else [False]
    bar = step_bar(0, "localize tune", not args.no_progress)
    r = tune_merging(args.data, args.split, args.loc, args.cls, sets, flips, bar)
    print(f"{r['split']}: {r['images']} images, {len(r['rows'])} settings; localisation error (%)")
    for row in r["rows"][: args.show]:
        errs = "  ".join(f"{k} {100 * v:5.1f}" for k, v in row.items() if k != "flags")
        print(f"  {errs}  {row['flags']}")
    print(f"best: {r['best']['flags']}  (CPU {r['cpu_s']:.0f} s, skipped {r['skipped']})")
    if args.json:
        atomic_write(args.json, json.dumps(r, indent=1).encode())
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..io.files import atomic_write, output_target
    from ..io.plots import draw_guesses
    from ..localization.api import predict

    if args.draw:
        output_target(args.draw)
        require_png(args.draw, "--draw")
    img, guesses, classes = predict(args.image, args.loc, args.cls, _dense_cfg(args))
    for rank, g in enumerate(guesses[: args.top], 1):
        box = ", ".join(f"{v:.0f}" for v in g.box)
        print(f"{rank}. {classes[g.label]} score {g.score:.3f} box (x0, y0, x1, y1) = ({box})")
    if args.draw:
        buf = io.BytesIO()
        fmt = Image.registered_extensions().get(Path(args.draw).suffix.lower(), "PNG")
        draw_guesses(img, guesses, classes, args.top).save(buf, format=fmt)
        atomic_write(args.draw, buf.getvalue())
        print(f"drew {args.draw}")
    return 0
