"""``verydeep export CKPT OUT``: ONNX (the FC or the dense form), or another toolkit's weight file
(torchvision ``.pth``, Keras ``.h5``, ``.caffemodel``) in that toolkit's input convention."""

from __future__ import annotations

import argparse

from .values import path_arg

FORMS = ("fc", "dense")  # io.weights.export.FORMS (a test keeps them equal; this module stays torch-free)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint as ONNX, a torchvision .pth, a Keras .h5 or a .caffemodel",
        description="Write a checkpoint as ONNX (the FC form, crop-size input, or the dense form, any "
        "size), or as a torchvision .pth, a Keras .h5 or a .caffemodel: conv1 is rewritten for the "
        "toolkit's input convention (RGB 0-1 ImageNet-standardised; Caffe's BGR 0-255 minus the mean).",
        epilog="""examples:
  verydeep export vgg16.safetensors vgg16-dense.onnx --check
  verydeep export vgg16.safetensors vgg16-fc.onnx --form fc --include-preprocess
  verydeep export tuned.safetensors tuned.pth              torchvision.models.vgg16().load_state_dict(...)
  verydeep export tuned.safetensors tuned.h5               keras.applications.VGG16(...).load_weights(...)""",
    )
    p.add_argument("checkpoint", help="verydeep .safetensors checkpoint", type=path_arg)
    p.add_argument("output", help="file to write: .onnx, .pth, .h5 or .caffemodel", type=path_arg)
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
    from ..io.files import output_target

    output_target(args.output)  # before the export, not after it
    if not args.output.endswith(".onnx"):
        from ..io.weights.weights_out import write_weights

        if args.form != "dense" or args.include_preprocess or args.check:
            raise ValueError("--form, --include-preprocess and --check apply to ONNX files only")
        prep = write_weights(args.checkpoint, args.output)
        print(f"{args.output}: input {prep.describe()}")
        return 0
    from ..io.weights.export import export_checkpoint

    worst = export_checkpoint(
        args.checkpoint, args.output, args.form, args.include_preprocess, check=args.check
    )
    msg = f"{args.output}: {args.form} form"
    print(msg + (f", max |onnxruntime - torch| = {worst:.2e}" if worst is not None else ""))
    return 0
