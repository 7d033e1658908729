"""``verydeep features``: Appendix B descriptors of a labelled image set, written to a file."""

from __future__ import annotations

import argparse
import sys

from .values import SCALE, THREADS, add_dense_args, add_precision_args, device, int_range, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="penultimate-layer descriptors (dense, pooled, flip-averaged, multi-scale, L2) of a dataset",
        description="Appendix B descriptors of every image of a labelled set, written to one file.",
        epilog="""examples:
  verydeep features D.safetensors ~/data/VOC2007 --split trainval --out voc-train.safetensors
  verydeep features D.safetensors ~/data/caltech101 --scales 256 384 512 --combine stack --out c101.npz""",
    )
    p.add_argument("checkpoint", help="verydeep .safetensors checkpoint (or imported weights)", type=path_arg)
    p.add_argument(
        "data",
        help="ImageFolder root (<class>/<image>) or VOC root (Annotations/, ImageSets/)",
        type=path_arg,
    )
    p.add_argument(
        "--split",
        default="",
        help="VOC: ImageSets/Main/<split>.txt (required); ImageFolder: a sub-folder (default: the root)",
    )
    p.add_argument("--out", required=True, help="output file, .safetensors or .npz", type=path_arg)
    _descriptor_args(p)
    _run_args(p)
    p.set_defaults(func=run)


def _descriptor_args(p: argparse.ArgumentParser) -> None:
    """What a descriptor is: scales, layer, flips, pooling (Appendix B's choices)."""
    p.add_argument(
        "--scales",
        type=SCALE,
        nargs="+",
        default=[384.0],
        help="test scales Q (smallest image side), paper units unless --units pixels",
    )
    p.add_argument(
        "--units",
        choices=["paper", "pixels"],
        default="paper",
        help="paper: pixels at crop 224, scaled by crop/224; pixels: as given",
    )
    p.add_argument(
        "--combine",
        choices=["average", "stack"],
        help="over several scales: average (VOC in the paper; the default) or stack (Caltech)",
    )
    p.add_argument(
        "--layer",
        default="fc7",
        help="fc7 (penultimate, the paper), fc6, or any conv-stage layer by name (pool1..pool5, relu4_3, "
        "conv3_1, ...: `verydeep info --layers ARCH`), its map averaged over positions",
    )
    p.add_argument("--no-flip", action="store_true", help="do not average in the flipped image")
    p.add_argument("--normalise-each-scale", action="store_true", help="L2 per scale before combining")
    p.add_argument("--batch-size", type=int_range(1), default=32, help="images per forward pass")
    p.add_argument(
        "--size-step",
        type=int_range(1, 1024),
        default=1,
        help="round long sides to a multiple (bigger batches)",
    )
    add_dense_args(p)  # --dense-align topleft: how docs/TRANSFER.md's numbers were made


def _run_args(p: argparse.ArgumentParser) -> None:
    """Reading the set (grey input, class order, bad files) and running the net (workers, device,
    precision)."""
    p.add_argument("--grey", action="store_true", help="feed grey images (nets trained on grey data)")
    p.add_argument(
        "--classes-from", help="descriptor file whose class order to use (e.g. the train file)", type=path_arg
    )
    p.add_argument(
        "--workers",
        type=int_range(-1, 256),
        default=-1,
        help="image-decoding processes; -1: min(8, cores) on a GPU, none on a CPU (the net uses every core)",
    )
    p.add_argument("--threads", type=THREADS, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or auto")
    add_precision_args(p)
    p.add_argument(
        "--on-bad-image",
        choices=["skip", "fail"],
        default="skip",
        help="unreadable images: skip and count, or stop",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..distributed import resolve_device
    from ..features import DescriptorConfig, describe_dataset
    from ..io.checkpoint import load_model
    from ..io.features import check_descriptor_path, save_descriptors
    from ..io.files import output_target

    output_target(args.out)  # a bad output path fails before any image is read
    check_descriptor_path(args.out)
    if len(args.scales) == 1 and (args.combine or args.normalise_each_scale):
        flag = "--combine" if args.combine else "--normalise-each-scale"  # one scale: nothing to combine
        raise ValueError(f"{flag} has no effect with one scale (it would still be recorded as a difference)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_model(args.checkpoint, resolve_device(args.device, what="--device"))
    cfg = DescriptorConfig(
        scales=tuple(args.scales), units=args.units, combine=args.combine or DescriptorConfig.combine,
        flip=not args.no_flip, layer=args.layer, normalise_each_scale=args.normalise_each_scale,
        batch_size=args.batch_size, size_step=args.size_step, grey=args.grey, exif=not args.no_exif,
        align=args.dense_align, precision=args.precision, calibrate=args.calibrate,
        extra={"checkpoint": args.checkpoint},
    )  # fmt: skip
    classes = None
    if args.classes_from:
        from ..io.features import load_descriptors

        classes = load_descriptors(args.classes_from).classes
    bar = lambda it: tqdm(it, desc="images", unit="img", file=sys.stderr, disable=args.no_progress)  # noqa: E731
    d = describe_dataset(
        model, meta.prep, args.data, args.split, cfg, classes,
        workers=args.workers, on_bad_image=args.on_bad_image, progress=bar,
    )  # fmt: skip
    save_descriptors(args.out, d)
    print(
        f"{len(d.paths)} images -> {args.out}: {d.features.shape[1]}-D ({d.task}, {len(d.classes)} classes), "
        f"CPU {d.info['cpu_s']:.1f} s, wall {d.info['wall_s']:.1f} s, skipped {len(d.info['skipped'])}"
    )
    return 0
