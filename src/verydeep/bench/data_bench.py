"""Data-pipeline throughput per core on real JPEG photographs, and the fastest decoder here.

One thread, CPU time (``time.process_time``): images per CPU-second is images/s per core, and
CPU time is far less disturbed than wall time by other processes sharing the cores. Variants,
interleaved round by round over the same photographs:

- ``torchvision``: ``ImageFolder``'s loader (PIL) + ``RandomResizedCrop`` + flip + ``ToTensor`` +
  ``Normalize``, on the same files;
- ``verydeep``: what ``verydeep train`` runs on image folders: ``load_image_tensor`` (libjpeg-turbo
  3 through simplejpeg, into an (H, W, 3) buffer) + ``TrainTransform`` on the uint8 tensor
  (isotropic rescale to a jittered S of which only the crop window is resampled, by torch's
  antialiased uint8 resize; flip), then the batch's colour shift and mean subtraction
  (``Preprocess``, on the training device: here the CPU, so it is timed too);
- ``verydeep_pil``: the same draws on PIL images (``load_image`` + PIL's ``resize(box=...)``);
- ``verydeep_resize_then_crop``: the PIL path with the whole image rescaled before cropping (the
  transform before this bench), to show what resampling only the crop gave;
- decoders alone: PIL, PIL with draft (DCT-domain downscaling to the smallest S), torchvision.io,
  simplejpeg.

The photographs are any folder's JPEGs (class folders, a VOC tree, a flat folder), at any depth.

Example:
    >>> from verydeep.bench.data_bench import decoder_names
    >>> decoder_names()
    ['pil', 'pil_draft', 'torchvision_io', 'simplejpeg']
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.io as tio
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.datasets.folder import default_loader

from ..config import pixels
from ..data.folder import ImageFolderDataset, collate_skip_bad
from ..data.images import find_images, load_image, simplejpeg
from ..data.preprocess import ColourPCA
from ..data.transforms import TrainTransform, rescale_smallest
from .config import TARGETS, BenchConfig
from .nets import PREP
from .profile import python_profile
from .timing import interleaved, median, paired_ratio

# fixed colour statistics (ILSVRC-like); the bench measures cost, not their values
PCA = ColourPCA((0.0045, 0.0188, 0.2175), ((0.41, -0.81, -0.58), (-0.81, -0.01, -0.59), (0.41, 0.59, -0.70)))
BATCH = 32


def decoder_names() -> list[str]:
    return ["pil", "pil_draft", "torchvision_io"] + (["simplejpeg"] if simplejpeg is not None else [])


class _ResizeThenCrop(TrainTransform):
    """The earlier transform: rescale the whole image to S, then crop (same random draws)."""

    def __call__(self, img: Image.Image, s: int | None = None) -> torch.Tensor:
        img = rescale_smallest(img, self.draw_scale() if s is None else s)
        top, left = random.randint(0, img.height - self.crop), random.randint(0, img.width - self.crop)
        img = img.crop((left, top, left + self.crop, top + self.crop))
        if self.flip and random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return TF.pil_to_tensor(img)


def _batches(items: Callable[[int], object], n: int, finish: Callable[[list], object]) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, n, BATCH):
            finish([items(j) for j in range(i, min(n, i + BATCH))])

    return run


def pipelines(samples: list, scale: tuple[int, int], crop: int) -> dict[str, Callable[[], None]]:
    """The training pipelines, each a call that produces every batch of ``samples``."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tv_t = T.Compose(
        [T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    )
    paths = [p for p, _ in samples]

    def tv_item(j: int) -> torch.Tensor:  # what ImageFolder.__getitem__ does for a sample
        return tv_t(default_loader(str(paths[j])))

    def ours(ds: ImageFolderDataset) -> Callable[[], None]:
        def finish(items: list) -> None:
            x = collate_skip_bad(items)[0]
            PREP(x, PCA.sample(len(x), 0.1))

        return _batches(ds.__getitem__, len(samples), finish)

    return {
        "torchvision": _batches(tv_item, len(samples), torch.stack),
        "verydeep": ours(ImageFolderDataset(samples, TrainTransform(scale, crop, tensor_input=True))),
        "verydeep_pil": ours(ImageFolderDataset(samples, TrainTransform(scale, crop))),
        "verydeep_resize_then_crop": ours(ImageFolderDataset(samples, _ResizeThenCrop(scale, crop))),
    }


def decoders(paths: list[Path], min_side: int) -> dict[str, Callable[[], None]]:
    def pil() -> None:
        for p in paths:
            with Image.open(p) as im:
                im.convert("RGB")

    def tv_io() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's notice
            for p in paths:
                tio.decode_jpeg(tio.read_file(str(p)), mode=tio.ImageReadMode.RGB)

    def turbo() -> None:
        for p in paths:
            simplejpeg.decode_jpeg(p.read_bytes(), colorspace="RGB")

    found = {
        "pil": pil,
        "pil_draft": lambda: [load_image(p, min_side=min_side) for p in paths],
        "torchvision_io": tv_io,
        "simplejpeg": turbo,
    }
    return {k: found[k] for k in decoder_names()}  # simplejpeg only where its wheel is installed


def bench_data(cfg: BenchConfig, root: Path, progress=None) -> dict:
    """Images per CPU-second (one thread) of each pipeline and decoder on ``root``'s JPEGs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jpegs = [(p, 0) for p in find_images(root, "photo folder") if p.suffix.lower() in (".jpg", ".jpeg")]
        if not jpegs:
            raise ValueError(f"{root} holds no JPEG photographs (the data part times JPEG decoding)")
        samples = random.Random(0).sample(jpegs, min(cfg.data_images, len(jpegs)))
        scale = (pixels(cfg.train_scale[0], cfg.crop), pixels(cfg.train_scale[1], cfg.crop))
        fns = pipelines(samples, scale, cfg.crop)
        fns.update({f"decode_{k}": f for k, f in decoders([p for p, _ in samples], scale[0]).items()})
        random.seed(0)
        torch.manual_seed(0)
        times = interleaved(fns, cfg.data_rounds, warmup=1, clock=time.process_time, progress=progress)
        rate = {k: len(samples) / median(v) for k, v in times.items()}
        prof = None
        ratios = {k: paired_ratio(times, "torchvision", k) for k in ("verydeep", "verydeep_pil")}
        if cfg.profile and ratios["verydeep"] < TARGETS["data"]:
            prof = python_profile(fns["verydeep"])
    finally:
        torch.set_num_threads(threads)
    best_decoder = max(decoder_names(), key=lambda k: rate[f"decode_{k}"])
    out = {
        "images": len(samples),
        "root": str(root),
        "scale_px": list(scale),
        "crop": cfg.crop,
        "images_per_cpu_s": rate,
        "samples_cpu_s": times,
        "speedups": ratios,
        "speedup": ratios["verydeep"],  # the pipeline `verydeep train` runs on image folders
        "best_decoder": best_decoder,
    }
    if prof:
        out["profile"] = prof
    return out
