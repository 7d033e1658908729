"""``verydeep export CKPT OUT.onnx``: the FC form or the dense form as ONNX."""

from __future__ import annotations

import argparse

from .values import path_arg

FORMS = ("fc", "dense")  # io.export.FORMS (a test keeps them equal; this module stays torch-free)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint as ONNX (FC form or dense form)",
        description="Write a checkpoint as ONNX: the FC form (crop-size input) or the dense form (any size).",
        epilog="""examples:
  verydeep export vgg16.safetensors vgg16-dense.onnx --check
  verydeep export vgg16.safetensors vgg16-fc.onnx --form fc --include-preprocess""",
    )
    p.add_argument("checkpoint", help="verydeep .safetensors checkpoint", type=path_arg)
    p.add_argument("output", help="ONNX file to write (.onnx)", type=path_arg)
    p.add_argument(
        "--form",
        choices=FORMS,
        default="dense",
        help="fc: crop_size input, logits; dense: any size >= crop_size, class score map (default)",
    )
    p.add_argument(
        "--include-preprocess",
        action="store_true",
        help="the graph takes RGB pixels 0-255 and normalises them itself",
    )
    p.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.checkpoint import output_target
    from ..io.export import export_checkpoint

    output_target(args.output)  # before the export, not after it
    worst = export_checkpoint(
        args.checkpoint, args.output, args.form, args.include_preprocess, check=args.check
    )
    msg = f"{args.output}: {args.form} form"
    print(msg + (f", max |onnxruntime - torch| = {worst:.2e}" if worst is not None else ""))
    return 0
