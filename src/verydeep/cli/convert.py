"""``verydeep convert IN OUT``: Caffe, torchvision, Keras or safetensors weights to a checkpoint."""

from __future__ import annotations

import argparse

from ..data.presets import PRESETS
from .values import path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import weights (.caffemodel, torchvision .pth, Keras .h5, .safetensors) as a checkpoint",
        description="Import weights you already have as a verydeep checkpoint (weights + metadata).",
        epilog="""examples:
  verydeep convert vgg16-397923af.pth vgg16.safetensors                      torchvision
  verydeep convert VGG_ILSVRC_16_layers.caffemodel vgg16.safetensors --prototxt deploy.prototxt --rgb
  verydeep convert vgg16_weights.h5 vgg16.safetensors --classes names.txt    Keras""",
    )
    p.add_argument("input", help="weights file; its type is read from its first bytes", type=path_arg)
    p.add_argument("output", help="verydeep checkpoint to write (.safetensors)", type=path_arg)
    p.add_argument(
        "--preprocess",
        choices=list(PRESETS),
        help="preset stored with the weights (default: caffe for Caffe/Keras, torchvision for .pth)",
    )
    p.add_argument(
        "--rgb",
        action="store_true",
        help="reorder a BGR net's first conv (Caffe, Keras) to RGB; preprocessing becomes RGB too",
    )
    p.add_argument("--prototxt", help="Caffe deploy .prototxt to check the weights against", type=path_arg)
    p.add_argument(
        "--classes", help="text file with one class name per line (default class_0 ...)", type=path_arg
    )
    p.add_argument("--arch", help="configuration when the file is ambiguous (e.g. A vs A-LRN)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.weights.convert import convert

    meta = convert(
        args.input,
        args.output,
        preprocess=args.preprocess,
        rgb=args.rgb,
        classes=args.classes,
        arch=args.arch,
        prototxt=args.prototxt,
    )
    print(
        f"{args.output}: VGG {meta.model['arch']} from {meta.source}, {len(meta.classes)} classes, "
        f"input {meta.prep.describe()}"
    )
    return 0
