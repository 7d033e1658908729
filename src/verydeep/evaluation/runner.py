"""Evaluate one or more checkpoints on a data set with the paper's methods (Tables 3-6).

Base methods are ``centre``, ``dense`` and ``multicrop``; a combination such as
``dense+multicrop`` averages their posteriors. Posteriors are averaged over the test scales
(equal weight per scale) and, for an ensemble, over nets. Speed: dense images are bucketed by
their exact shape after rescaling and each bucket runs as one batch (never padded, so exact);
crops of many images share batches; each method's compute time is measured on its own.

Example:
    >>> default_scales([256]), default_scales([256, 512]), default_scales([256, 512], multi=False)
    ([224.0, 256.0, 288.0], [256.0, 384.0, 512.0], [384.0])
    >>> parse_methods("dense,multicrop,dense+multicrop")
    ['dense', 'multicrop', 'dense+multicrop']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from tqdm import tqdm

from ..config import pixels
from ..data.loaders import decoding_workers
from ..data.preprocess import Preprocess
from ..models.vgg import VGG
from ..numerics import PRECISIONS, Numerics, resolve
from ..ranges import DEVICE_PATTERN, MAX_SCALE, MIN_SCALE, check, spec
from .buckets import ShapeBuckets
from .core import Runtime, crop_probs, dense_probs, grid_crops, match_channels, window_trim
from .data import EvalData, batches
from .precision import check_calibrate, image_paths, read_images, spread

BASE_METHODS = ("centre", "dense", "multicrop")


def parse_methods(spec: str | list[str]) -> list[str]:
    """``"dense,dense+multicrop"`` -> ``["dense", "dense+multicrop"]``, validated."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for m in (s.strip() for s in items if s.strip()):
        parts = m.split("+")
        bad = [p for p in parts if p not in BASE_METHODS]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; use {', '.join(BASE_METHODS)} or a + of them")
        if len(set(parts)) < len(parts) or "+".join(parts) in out:  # twice the passes, the same numbers
            raise ValueError(f"method {m!r} repeats a method; give each once")
        out.append("+".join(parts))
    if not out:
        raise ValueError("no evaluation method given")
    return out


def default_scales(train_scale: list[float], multi: bool = True) -> list[float]:
    """Test scales Q in paper units from the training scale (Section 3.2).

    Fixed S: {S-32, S, S+32} (single: S); jittered [Smin, Smax]: {Smin, (Smin+Smax)/2, Smax}
    (single: (Smin+Smax)/2).
    """
    if len(train_scale) == 1 or train_scale[0] == train_scale[-1]:
        s = float(train_scale[0])
        return [s - 32, s, s + 32] if multi else [s]
    lo, hi = float(train_scale[0]), float(train_scale[-1])
    return [lo, (lo + hi) / 2, hi] if multi else [(lo + hi) / 2]


def resolve_scales(spec: str | list[float] | None, train_scale: list[float]) -> list[float]:
    """``multi`` (default), ``single`` or explicit Q values in paper units."""
    if spec is None or spec == "multi":
        return default_scales(train_scale, multi=True)
    if spec == "single":
        return default_scales(train_scale, multi=False)
    return check_scales(spec)


def check_scales(spec: str | list[float]) -> list[float]:
    """Explicit test scales: numbers in [MIN_SCALE, MAX_SCALE] paper units (at least one), or a
    one-line ValueError."""
    try:
        values = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        raise ValueError(
            f"test scales must be 'multi', 'single' or numbers like 256,384, got {spec!r}"
        ) from None
    if not values or not all(MIN_SCALE <= v <= MAX_SCALE for v in values):
        raise ValueError(
            f"test scales must be in [{MIN_SCALE}, {MAX_SCALE}] paper units (Q below the crop, "
            f"{MIN_SCALE}, leaves the image smaller than one window), got {spec!r}"
        )
    return values


@dataclass
class EvalOptions:
    """How to evaluate; defaults are the paper's protocol (dense, flip, 3 scales)."""

    methods: list[str] = field(default_factory=lambda: ["dense"])
    scales: str | list[float] | None = "multi"  # paper units; see resolve_scales
    # dense: average the score map then soft-max (paper) | softmax
    average: str = spec("scores", choices=("scores", "softmax"))
    # dense: border pixels no window sees, cut from both sides | topleft
    dense_align: str = spec("centre", choices=("centre", "topleft"))
    flip: bool = True
    grid: int = spec(5, lo=1, hi=32)  # multi-crop: grid x grid crops per scale
    centre_flip: bool = False  # torchvision's baseline uses the crop alone
    batch_size: int = spec(64, lo=1, hi=1_000_000)  # crops per forward; dense: as many pixels
    device: str = spec("cpu", pattern=DEVICE_PATTERN)
    precision: str = spec("fp32", choices=PRECISIONS)  # numerics.py
    calibrate: str | None = None  # int8: a folder of photographs to calibrate on (default: the inputs)
    # the same numbers as NCHW; 1.3-1.5x faster on CPU (oneDNN's blocked layout, vectorised pools)
    channels_last: bool = True
    workers: int = spec(-1, lo=-1, hi=256)  # decoding processes; -1: from the cores (decoding_workers)
    fast_decode: bool = True
    exif: bool = True  # turn photographs upright by their EXIF orientation, as training does
    limit: int | None = spec(None, lo=1)  # evaluate this many images, spread evenly (None: all)
    progress: bool = True

    def __post_init__(self) -> None:
        """Methods parsed once; every number in range (one-line ValueErrors, before any work)."""
        self.methods = parse_methods(self.methods)
        if self.scales not in (None, "multi", "single"):
            check_scales(self.scales)
        check(self, "eval")
        check_calibrate(self.precision, self.calibrate)

    def numerics(self) -> Numerics:
        """``precision`` and ``channels_last`` resolved for ``device`` (a one-line ValueError
        where the device cannot run the mode)."""
        return resolve(self.precision, self.device, channels_last=self.channels_last)


class _Accumulator:
    """Runs ``fn`` on batches of equal-shaped inputs (``ShapeBuckets``; a batch is full at
    ``limit`` crop-equivalents of ``unit`` pixels each) and sums posteriors per image."""

    def __init__(self, fn: Callable, n: int, limit: float, unit: int, device: torch.device, keep: float = 8):
        self.fn, self.unit, self.device = fn, unit, device
        self.sum: torch.Tensor | None = None
        self.count = torch.zeros(n)
        self.seconds = 0.0
        self.buckets = ShapeBuckets(self._run, limit, keep)

    @property
    def batches(self) -> int:
        return self.buckets.batches

    def add(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        self.buckets.add(tuple(x.shape[1:]), (x, idx), weight=len(x) * x.shape[-1] * x.shape[-2] / self.unit)

    def _run(self, key: tuple, items: list) -> None:
        x, idx = torch.cat([a for a, _ in items]), torch.cat([b for _, b in items])
        t0 = time.perf_counter()
        p = self.fn(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        p = p.double().cpu()
        if self.sum is None:
            self.sum = torch.zeros(len(self.count), p.shape[1], dtype=torch.float64)
        self.sum.index_add_(0, idx, p)
        self.count.index_add_(0, idx, torch.ones(len(idx)))

    def result(self) -> torch.Tensor:
        self.buckets.close()
        if self.sum is None:
            raise ValueError("no readable images to evaluate")
        return (self.sum / self.count.clamp_min(1)[:, None].double()).float()


def forwards_per_image(method: str, n_scales: int, opts: EvalOptions) -> float:
    """Net evaluations per image: dense 2 per scale, multi-crop grid^2 x 2, centre 1."""
    per = {
        "dense": 2 if opts.flip else 1,
        "multicrop": opts.grid**2 * (2 if opts.flip else 1),
        "centre": 2 if opts.centre_flip else 1,
    }
    return float(sum(per[b] for b in method.split("+")) * n_scales)


@dataclass
class NetPosteriors:
    """Posteriors (N, classes) per base method of one net, and what they cost."""

    probs: dict[str, torch.Tensor]
    valid: torch.Tensor  # bool (N,): image was readable
    seconds: dict[str, float]
    q_pixels: list[int]
    batches: dict[str, int]  # forward calls per base method (fewer = better bucketing)
    bad: int = 0


def calibration_images(data: EvalData, opts: EvalOptions) -> Iterable:
    """The images int8 is calibrated on: ``opts.calibrate``'s, else the evaluated ones (pixels only)."""
    if opts.calibrate:
        return read_images(spread(image_paths(opts.calibrate)), exif=opts.exif)
    if data.samples is not None:
        return read_images(spread([p for p, _ in data.samples]), exif=opts.exif)
    return spread(list(data.images))


def evaluate_net(
    model: VGG, prep: Preprocess, data: EvalData, q_pixels: list[int], opts: EvalOptions, desc: str = ""
) -> NetPosteriors:
    """Run every base method needed by ``opts.methods`` over ``data`` at scales ``q_pixels``."""
    if min(q_pixels) < model.crop_size:
        raise ValueError(f"test scale {min(q_pixels)} px is smaller than the crop {model.crop_size} px")
    rt = Runtime(opts.device, opts.numerics())
    needed = sorted({b for m in opts.methods for b in m.split("+")})
    fns = {
        "dense": lambda x: dense_probs(
            model, x, prep, flip=opts.flip, average=opts.average, align=opts.dense_align, rt=rt
        ),
        "multicrop": lambda x: crop_probs(model, x, prep, flip=opts.flip, rt=rt),
        "centre": lambda x: crop_probs(model, x, prep, flip=opts.centre_flip, rt=rt),
    }
    unit = model.crop_size**2
    accs = {m: _Accumulator(fns[m], len(data), opts.batch_size, unit, rt.device) for m in needed}
    valid, bad = torch.zeros(len(data), dtype=torch.bool), 0
    it = batches(
        data,
        q_pixels,
        batch_size=16,
        workers=decoding_workers(opts.workers, rt.device, cpu_auto=2),  # CPU: 2 overlap decoding
        fast_decode=opts.fast_decode,
        exif=opts.exif,
        pin_memory=rt.device.type == "cuda",
    )
    with torch.inference_mode(), tqdm(total=len(data), desc=desc, disable=not opts.progress) as bar:
        for per_q, _, index, n_bad in it:
            bad += n_bad
            valid[index] = True
            for xs in per_q:
                xs = [xs] if isinstance(xs, torch.Tensor) else [x[None] for x in xs]
                for j, x in enumerate(xs):
                    idx = index if len(xs) == 1 else index[j : j + 1]
                    x = match_channels(x, model.in_channels)
                    _feed(accs, x, idx, model.crop_size, opts.grid, opts.dense_align)
            bar.update(len(index) + n_bad)
        probs = {m: acc.result() for m, acc in accs.items()}
    seconds = {m: a.seconds for m, a in accs.items()}
    return NetPosteriors(probs, valid, seconds, list(q_pixels), {m: a.batches for m, a in accs.items()}, bad)


def _feed(
    accs: dict[str, _Accumulator], x: torch.Tensor, idx: torch.Tensor, crop: int, grid: int, align: str
) -> None:
    """Hand a batch of same-size images at one scale to each method's accumulator."""
    if "dense" in accs:  # cut to the pixels the windows see (as dense_probs would): 32-px buckets
        accs["dense"].add(window_trim(x, crop, 32, align), idx)
    if "centre" in accs:  # crop here so that images of different sizes share one batch
        accs["centre"].add(TF.center_crop(x, [crop, crop]), idx)
    if "multicrop" in accs:
        crops = grid_crops(x, crop, grid)  # (B, grid^2, C, crop, crop); one posterior per crop
        accs["multicrop"].add(crops.flatten(0, 1), idx.repeat_interleave(grid * grid))


def scales_for(meta_train_scale: list[float], crop: int, spec) -> tuple[list[float], list[int]]:
    """Test scales in paper units and in pixels for a net with crop size ``crop``."""
    q = resolve_scales(spec, meta_train_scale)
    return q, [pixels(v, crop) for v in q]
