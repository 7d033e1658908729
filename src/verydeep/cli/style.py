"""``verydeep style CONTENT STYLE --model CKPT --out result.png``: Gatys et al.'s style transfer."""

from __future__ import annotations

import argparse
import sys

from .values import int_range, path_arg, require_png


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "style",
        help="restyle a photo after another with a VGG's Gram matrices (Gatys et al. 2016)",
        description="Optimise an image so that its VGG features match CONTENT's and its Gram "
        "matrices STYLE's. The net is any verydeep checkpoint (convert one first); its own input "
        "convention is used.",
        epilog="""examples:
  verydeep style photo.jpg painting.jpg -m vgg19.safetensors --out restyled.png
  verydeep style a.jpg b.jpg -m A.safetensors --out r.png --size 192 --style-layers relu1_1,relu2_1:0.5
  layer presets: gatys2016 (relu1_1..relu5_1), gatys2016-content (relu4_2), johnson2016 (relu1_2,
  relu2_2, relu3_3, relu4_3), johnson2016-content (relu2_2); `verydeep info --layers ARCH` lists names""",
    )
    p.add_argument("content", help="the photo to keep the content of", type=path_arg)
    p.add_argument("style", help="the image whose style to take", type=path_arg)
    p.add_argument("-m", "--model", required=True, metavar="CKPT", help="verydeep checkpoint", type=path_arg)
    p.add_argument("--out", required=True, help="the result, a PNG", type=path_arg)
    p.add_argument("--size", type=int_range(32, 4096), default=256, help="the result's long side in px")
    p.add_argument("--steps", type=int_range(1, 100_000), default=300, help="optimiser steps")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="L-BFGS (Gatys) or Adam")
    p.add_argument("--lr", type=float, default=1.0, help="L-BFGS step size (Adam: this / 50)")
    p.add_argument("--content-layers", default="gatys2016-content", help="a preset or NAME[:W],...")
    p.add_argument("--style-layers", default="gatys2016", help="a preset or NAME[:W],...")
    p.add_argument("--content-weight", type=float, default=1.0, help="weight of the perceptual loss")
    p.add_argument("--style-weight", type=float, default=1e3, help="weight of the Gram-matrix loss")
    p.add_argument(
        "--normalize",
        choices=["target", "none"],
        default="target",
        help="target: each layer's loss relative to its target's size, so the weights suit every "
        "input convention (default); none: the papers' raw losses, whose scale follows the net's",
    )
    p.add_argument("--tv-weight", type=float, default=0.0, help="total variation (p = 2)")
    p.add_argument("--init", choices=["content", "noise"], default="content", help="the starting image")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="for a noise start")
    p.add_argument("--side-by-side", action="store_true", help="write content, style and result side by side")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def layers_arg(text: str) -> str | dict[str, float]:
    """A preset name, or ``relu1_1,relu2_1:0.5`` (weight 1 unless given)."""
    if ":" not in text and "," not in text and not text.startswith(("conv", "relu", "pool", "bn", "fc")):
        return text
    out = {}
    for part in text.split(","):
        name, _, w = part.strip().partition(":")
        try:
            out[name] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"layer weight {w!r} of {name} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    from ..io.checkpoint import load_model
    from ..io.files import atomic_write, output_target
    from ..io.plots import image_png
    from ..losses import layer_weights
    from ..models.layers import check_layers
    from ..style import StyleConfig, load_pair, side_by_side, stylise

    output_target(args.out)  # a bad output path costs nothing
    require_png(args.out, "--out")
    cfg = StyleConfig(
        steps=args.steps, optimizer=args.optimizer, lr=args.lr,
        content_layers=layers_arg(args.content_layers), style_layers=layers_arg(args.style_layers),
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        normalize=args.normalize,
        init=args.init, seed=args.seed,
    )  # fmt: skip
    net, meta = load_model(args.model)
    check_layers(net, [*layer_weights(cfg.content_layers), *layer_weights(cfg.style_layers)])
    content, style = load_pair(args.content, args.style, args.size)  # every input is good: start
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="style", file=sys.stderr)

    def progress(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")

    try:
        out = stylise(net, meta.prep, content, style, cfg, progress)
    finally:  # an error's line then starts a line of its own
        if bar is not None:
            bar.close()
    picture = side_by_side(content, style, out) if args.side_by_side else out
    atomic_write(args.out, image_png(picture))
    print(f"{args.out}: {picture.shape[-1]}x{picture.shape[-2]}, {cfg.steps} {cfg.optimizer} steps")
    return 0
