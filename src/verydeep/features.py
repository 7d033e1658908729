"""Very deep features (Appendix B): image descriptors from the penultimate layer, and a feature API.

The paper's descriptor: rescale the whole image so its smallest side is Q, apply the net densely
(FC layers as convolutions), average-pool the FC7 map (post-ReLU, 4096-D for the full net) over
all positions, average with the same for the horizontally flipped image, and for several Q either
stack (concatenate) or average the per-scale vectors; finally L2-normalise. Choices the paper
leaves open are ``DescriptorConfig`` fields: the units of Q (paper units scale with crop/224, as
in ``config.pixels``), whether each scale is also L2-normalised before combining, and the layer
(FC7, FC6, or a conv block's average-pooled output, which the paper does not use).

Images of one scale are batched by their exact rescaled size (buckets), so batches are real
batches without padding or cropping; ``size_step`` > 1 rounds the long side to a multiple of
that many pixels (a slight aspect change) to make buckets fuller.

``FeatureExtractor`` is the timm ``features_only``-style view: per-block maps (pool1..pool5) and
the dense FC6/FC7 maps, with ``feature_info`` (channels, reduction).

Example:
    >>> import torch
    >>> from PIL import Image
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.features import DescriptorConfig, describe_images, FeatureExtractor
    >>> net = VGG("A", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()
    >>> imgs = [Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (40, 40))]
    >>> cfg = DescriptorConfig(scales=(32, 48), units="pixels", combine="stack")
    >>> d = describe_images(net, Preprocess(), imgs, cfg)
    >>> d.shape, torch.allclose(d.norm(dim=1), torch.ones(2))
    (torch.Size([2, 64]), True)
    >>> [f.shape[1] for f in FeatureExtractor(net, ("pool1", "pool5", "fc7"))(torch.zeros(1, 3, 64, 64))]
    [8, 64, 32]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .config import pixels
from .data.images import BadImageError
from .data.loaders import decoding_workers
from .data.photos import PathImages, first_item, labelled_images, rescale_to_sides
from .data.preprocess import Preprocess
from .evaluation.buckets import ShapeBuckets
from .evaluation.core import Runtime, dense_pooled, window_trim
from .evaluation.precision import check_calibrate, for_precision, image_paths, read_images, spread
from .io.features import Descriptors
from .models.extractor import LAYERS, FeatureExtractor
from .models.layers import CONV_STAGE
from .models.vgg import VGG
from .numerics import INT8, PRECISIONS, resolve
from .ranges import MAX_SCALE, MIN_SCALE, check, spec

log = logging.getLogger(__name__)
__all__ = [
    "LAYERS",
    "DescriptorConfig",
    "FeatureExtractor",
    "describe_dataset",
    "describe_images",
    "describe_paths",
]


@dataclass(frozen=True)
class DescriptorConfig:
    """How to turn an image into one vector. Defaults: the paper's single-scale FC7 descriptor."""

    scales: tuple[float, ...] = spec((384.0,), gt=0, hi=MAX_SCALE)  # Q, smallest image side
    # paper: pixels at crop 224 (scaled by crop/224) | pixels: as given
    units: str = spec("paper", choices=("paper", "pixels"))
    combine: str = spec("average", choices=("average", "stack"))  # over scales: VOC | Caltech
    flip: bool = True  # average in the horizontally flipped image's descriptor
    # fc7 (the paper's penultimate layer, after its ReLU) | fc6 (after its ReLU) | a conv-stage layer
    # by name (pool1..pool5, relu4_3, ...: verydeep info --layers), its map averaged over positions
    # (not in the paper: less tied to the source classes than the FC layers)
    layer: str = "fc7"
    normalise_each_scale: bool = False  # also L2-normalise per scale before combining
    batch_size: int = spec(32, lo=1, hi=1_000_000)
    size_step: int = spec(1, lo=1, hi=1024)  # round the long side to a multiple of this (1: exact ratio)
    exif: bool = True  # turn photographs upright by their EXIF orientation
    # dense windows: centre, as evaluation cuts the pixels no window sees (window_trim), or
    # topleft, a plain fully-convolutional pass (docs/TRANSFER.md's numbers were made so)
    align: str = spec("centre", choices=("centre", "topleft"))
    grey: bool = False  # feed grey replicated to RGB (for nets trained on grey images, e.g. Fashion-MNIST)
    precision: str = spec("fp32", choices=PRECISIONS)  # numerics.py; int8-checked is refused below
    calibrate: str | None = None  # int8: a folder of photos to calibrate on (default: the inputs)
    extra: dict = field(default_factory=dict, compare=False)  # free-form provenance

    def __post_init__(self) -> None:
        if not self.scales:
            raise ValueError("descriptor scales: give at least one")
        check(self, "descriptor")
        if self.units == "paper" and min(self.scales) < MIN_SCALE:  # pixels: checked against the crop
            raise ValueError(
                f"descriptor scales in paper units must be >= {MIN_SCALE} (the crop), got {self.scales}"
            )
        if self.precision == "int8-checked":  # it re-checks class decisions; features make none
            raise ValueError("int8-checked re-checks class decisions and features have none: use int8")
        check_calibrate(self.precision, self.calibrate, ("int8",))  # features have no int8-checked
        if self.layer not in ("fc6", "fc7") and not CONV_STAGE.match(self.layer):
            raise ValueError(
                "descriptor layer must be fc7, fc6 or a conv-stage layer (pool1..5, relu4_3, ...), "
                f"got {self.layer!r}"
            )

    def sides(self, crop_size: int) -> list[int]:
        """Smallest image side in pixels for each scale."""
        if self.units == "paper":
            return [pixels(q, crop_size) for q in self.scales]
        sides = [round(q) for q in self.scales]
        if min(sides) < crop_size:
            raise ValueError(f"scales {sides} px: each must be >= the net's crop size {crop_size}")
        return sides


def combine_scales(
    per_scale: Sequence[torch.Tensor], combine: str, normalise_each: bool = False
) -> torch.Tensor:
    """Stack or average (N, D) descriptors over scales, then L2-normalise each row."""
    if normalise_each:
        per_scale = [F.normalize(d, dim=1) for d in per_scale]
    d = torch.cat(list(per_scale), dim=1) if combine == "stack" else torch.stack(list(per_scale)).mean(0)
    return F.normalize(d, dim=1)


def _colour_mode(model: VGG, cfg: DescriptorConfig) -> str:
    """How photos are fed: grey to a 1-channel net, RGB or (``grey``) grey replicated to RGB."""
    if model.in_channels == 1 and cfg.grey:  # such a net only ever sees grey
        raise ValueError("--grey has no effect: this net takes one channel, so its input is grey anyway")
    return "L" if model.in_channels == 1 else ("LRGB" if cfg.grey else "RGB")


@torch.no_grad()
def _run_buckets(
    model: VGG, prep: Preprocess, items: Iterable, cfg: DescriptorConfig, n_scales: int, rt: Runtime
) -> dict[int, list[torch.Tensor]]:
    """Feed (i, per-scale tensors) items through size buckets; returns {i: [descriptor per scale]}."""
    out: dict[int, list] = {}

    def run(key: tuple, items: list) -> None:
        idx, xs = zip(*items, strict=True)
        # evaluation's dense engine: the pooled map of cfg.layer, averaged with the flipped image's
        d = dense_pooled(
            model, torch.stack(xs), prep, output=cfg.layer, flip=cfg.flip, align=cfg.align, rt=rt
        )
        d = d.float().cpu()
        for i, row in zip(idx, d, strict=True):
            out.setdefault(i, [None] * n_scales)[key[0]] = row

    buckets = ShapeBuckets(run, limit=cfg.batch_size)
    for i, scaled in items:
        if isinstance(scaled, str):  # on_bad_image="fail": the loader's message, one line
            raise BadImageError(scaled)
        if scaled is None:
            continue
        for s, x in enumerate(scaled):
            # cut the border pixels no dense window sees (dense_pooled would cut them anyway):
            # sizes then fall into 32-px buckets, so photos of different sizes share a batch
            # and the descriptors are exactly those of the uncut image
            x = window_trim(x, model.crop_size, 32, cfg.align)
            buckets.add((s, *x.shape[-2:]), (i, x))
    buckets.close()
    return out


def _assemble(out: dict[int, list[torch.Tensor]], cfg: DescriptorConfig) -> tuple[torch.Tensor, list[int]]:
    kept = sorted(out)
    if not kept:
        raise ValueError("no image could be described (all unreadable?)")
    per_scale = [torch.stack([out[i][s] for i in kept]) for s in range(len(cfg.scales))]
    return combine_scales(per_scale, cfg.combine, cfg.normalise_each_scale), kept


def describe_images(
    model: VGG, prep: Preprocess, images: Sequence[Image.Image], cfg: DescriptorConfig
) -> torch.Tensor:
    """Descriptors (N, D) of in-memory PIL images, in order."""
    net, rt = _for_precision(model, prep, cfg, images)
    sides = cfg.sides(model.crop_size)
    items = (
        (i, rescale_to_sides(img, sides, cfg.size_step, _colour_mode(model, cfg)))
        for i, img in enumerate(images)
    )
    return _assemble(_run_buckets(net, prep, items, cfg, len(sides), rt), cfg)[0]


def _for_precision(model: VGG, prep: Preprocess, cfg: DescriptorConfig, inputs: Sequence) -> tuple:
    """(net, Runtime) for ``cfg.precision``; int8 calibrates on ``cfg.calibrate`` or ``inputs``
    (paths or PIL images), evenly spread."""
    model.eval()
    device = next(model.parameters()).device
    numerics = resolve(cfg.precision, device, channels_last=True)  # same descriptors, ~1.5x faster on CPU
    precision = numerics.mode
    calib: Iterable = ()
    if precision in INT8:
        pick = spread(image_paths(cfg.calibrate) if cfg.calibrate else list(inputs))
        calib = pick if pick and isinstance(pick[0], Image.Image) else list(read_images(pick, cfg.exif))
    net, _ = for_precision(model, prep, precision, calib)
    return net, Runtime(device, numerics)


def describe_paths(
    model: VGG,
    prep: Preprocess,
    paths: Sequence[str | Path],
    cfg: DescriptorConfig,
    workers: int = -1,
    on_bad_image: str = "skip",
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Descriptors of image files and the indices (into ``paths``) of those that could be read.

    Decoding and rescaling run in ``workers`` DataLoader processes (-1: ``decoding_workers``),
    which keep up to two batches decoded ahead of the net; ``progress`` wraps the item iterator
    (e.g. ``tqdm``).
    """
    mode = _colour_mode(model, cfg)  # first: a refused --grey costs no calibration pass
    net, rt = _for_precision(model, prep, cfg, list(paths))
    sides = cfg.sides(model.crop_size)
    ds = PathImages(list(paths), sides, cfg.size_step, mode, on_bad_image == "fail", cfg.exif)
    n = decoding_workers(workers, rt.device, cpu_auto=0)  # CPU: the net uses every core
    # items come one photo at a time and the net takes a bucket of batch_size at once: a deep
    # prefetch lets the workers go on decoding while the net runs
    ahead = {"prefetch_factor": max(2, -(-2 * cfg.batch_size // n)), "persistent_workers": False} if n else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=n, collate_fn=first_item, **ahead)
    items = progress(loader) if progress else loader
    return _assemble(_run_buckets(net, prep, items, cfg, len(sides), rt), cfg)


def describe_dataset(
    model: VGG,
    prep: Preprocess,
    root: str | Path,
    split: str,
    cfg: DescriptorConfig,
    classes: list[str] | None = None,
    **kwargs: object,
) -> Descriptors:
    """Descriptors of a whole labelled dataset (see ``labelled_images``); ``kwargs`` go to ``describe_paths``.

    ``info`` records the descriptor config, the CPU and wall time of this process and skipped files.
    """
    paths, labels, classes = labelled_images(root, split, classes)
    cpu, wall = time.process_time(), time.perf_counter()
    feats, kept = describe_paths(model, prep, paths, cfg, **kwargs)
    info = {
        "descriptor": {k: v for k, v in asdict(cfg).items() if k != "extra"} | cfg.extra,
        "root": str(root),
        "split": split,
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "skipped": [str(paths[i]) for i in sorted(set(range(len(paths))) - set(kept))],
    }
    return Descriptors(feats.numpy(), labels[kept], [paths[i] for i in kept], classes, info)
