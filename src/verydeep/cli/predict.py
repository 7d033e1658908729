"""``verydeep predict -m CKPT IMAGE...``: top-5 classes, optionally a class score heat map."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .eval import add_method_args, options, setup
from .values import int_range, path_arg, require_png


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-5 classes of image files",
        description="The top classes of each image with the paper's dense multi-scale test "
        "(or another method).",
        epilog="""examples:
  verydeep predict -m vgg16.safetensors cat.jpg dog.png
  verydeep predict -m D.safetensors -m E.safetensors photo.jpg --top 3 --json     an ensemble
  verydeep predict -m D.safetensors photo.jpg --heatmap map.png       the top class's score map

exit status: 0 all images done; 1 some skipped (named on stderr), the rest printed; 2 none readable""",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)", type=path_arg)
    p.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="CKPT",
        help="repeat for an ensemble",
        type=path_arg,
    )
    p.add_argument("--top", type=int_range(1), default=5, help="classes to print per image")
    add_method_args(p, "dense")
    p.add_argument(
        "--heatmap",
        metavar="PNG",
        help="write the top class's dense score map over each image",
        type=path_arg,
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from ..evaluation.core import Runtime
    from ..evaluation.predict import predict
    from ..evaluation.protocol import load_classifiers
    from ..io.files import output_target

    if args.heatmap:
        output_target(args.heatmap)  # a bad output path fails before any image is read
        require_png(args.heatmap, "--heatmap")
    opts = options(args, setup(args))
    if len(opts.methods) != 1:
        raise ValueError(f"predict takes one --method (a + combination is one), got {args.method!r}")
    nets = load_classifiers(args.model, opts.device)
    results = predict(nets, args.images, top=args.top, opts=opts)
    good = [r for r in results if "error" not in r]
    for r in results:
        if "error" in r:  # reported and passed over: the good files' results are not lost
            print(f"verydeep predict: skipped {r['error']}", file=sys.stderr)
    if args.heatmap and good:
        write_heatmap(args, nets[0], good, Runtime(opts.device, opts.numerics()), opts.dense_align)
    for r in good:
        r.pop("probs")
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in good:
            print(f"{r['path']} ({r['size'][0]}x{r['size'][1]} {r['mode']})")
            for i, t in enumerate(r["top"], 1):
                print(f"  {i}. {t['class']:<30} {t['prob']:.4f}")
        if args.heatmap and good:
            print(f"heat map: {args.heatmap}")
    if not good:  # nothing could be read: the input is bad, as for any other refused input
        return 2
    return 1 if len(good) < len(results) else 0  # some skipped: the rest are printed all the same


def write_heatmap(args: argparse.Namespace, net: tuple, results: list[dict], rt, align: str) -> None:
    """The top class's dense score map of each image, at the middle test scale, as one PNG."""
    from ..data.images import load_image
    from ..evaluation.predict import score_map
    from ..evaluation.runner import scales_for
    from ..io.files import atomic_write
    from ..io.plots import heatmap_png

    model, meta = net
    _, q_px = scales_for(meta.train_scale, model.crop_size, args.scales)
    q = sorted(q_px)[len(q_px) // 2]  # the middle test scale
    panels = []
    for r in results:
        best = r["top"][0]
        img = load_image(r["path"], exif=not args.no_exif)
        m, offset = score_map(model, meta, img, best["index"], q, rt, align)
        title = f"{Path(r['path']).name}: {best['class']} {best['prob']:.3f} (Q={q}px)"
        if len(args.model) > 1:  # the probability is the ensemble's; the map is one net's
            title += f", map of {Path(args.model[0]).name}"
        panels.append((img, q, m, offset, title))
    atomic_write(Path(args.heatmap), heatmap_png(panels, model.crop_size))
