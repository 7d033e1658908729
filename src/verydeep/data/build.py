"""From a ``RunConfig`` to batches: datasets, held-out split, training statistics, augmentation.

The held-out split that drives the learning-rate schedule is cut from the training split with a
fixed seed; the test split is only ever used for the final report. The mean pixel and colour PCA
are computed on the training part only, once, and travel with every checkpoint.

Example:
    >>> from verydeep.data.build import split_indices
    >>> train, val = split_indices(100, 0.1)
    >>> len(train), len(val), len(set(train.tolist()) & set(val.tolist()))
    (90, 10, 0)
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig, pixels
from ..distributed import DistEnv
from .fashion_mnist import CLASSES as FMNIST_CLASSES
from .fashion_mnist import FILES as FMNIST_FILES
from .fashion_mnist import load_fashion_mnist
from .folder import ImageFolderDataset
from .images import BadImageError, load_image
from .loaders import EpochOrder, FolderBatches, TensorBatches, decoding_workers, spread_indices
from .preprocess import ColourPCA, Preprocess
from .presets import PRESETS
from .sources import resolve_split
from .transforms import (
    CentreCropTransform,
    RandomResizedCropTransform,
    TrainTransform,
    centre_crop_params,
    random_crop_params,
    rescale_smallest,
    scale_crop_flip,
)
from .voc import split_file

SPLIT_SEED = 1234  # the held-out split never changes with the training seed


@dataclass(frozen=True, kw_only=True)
class DataBundle:
    classes: list[str]
    channels: int
    train: TensorBatches | FolderBatches
    val: TensorBatches | FolderBatches | None
    test: TensorBatches | FolderBatches | None
    # device uint8 batch -> net input: the part of the training transform the loader has not done
    # (Fashion-MNIST, in memory: rescale, crop, flip, colour shift, normalise; photographs, whose
    # workers rescale, crop and flip: colour shift, normalise)
    train_prepare: Callable[[torch.Tensor], torch.Tensor]
    eval_prepare: Callable[[torch.Tensor], torch.Tensor]  # the same for held-out batches: normalise
    preprocess: Preprocess
    pca: ColourPCA


def dataset_kind(root: str | Path) -> str:
    """``data.dataset`` for a folder, by its layout: ``voc`` (``ImageSets/Main``), ``fashion-mnist``
    (the IDX files), else ``imagefolder`` (class folders, or ``train/`` and ``val/`` of them)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}")
    if (root / "ImageSets" / "Main").is_dir():
        return "voc"
    if any((root / f).is_file() for f in FMNIST_FILES["train"]):
        return "fashion-mnist"
    return "imagefolder"


def split_indices(n: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = round(n * val_fraction)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def pixel_stats(pixels_: torch.Tensor) -> tuple[tuple[float, ...], ColourPCA]:
    """Mean RGB (0-255) and colour PCA of (P, C) pixel samples."""
    return tuple(pixels_.float().mean(0).tolist()), ColourPCA.fit(pixels_)


def input_preprocess(
    pixels_: torch.Tensor, normalize: str, choice: str = "data", source: Preprocess | None = None
) -> tuple[Preprocess, ColourPCA]:
    """The net's input convention and the colour PCA (always of the training pixels).

    ``choice`` is ``data.preprocess``: a preset by name; ``auto`` with a ``source`` (the
    convention of the checkpoint the net starts from) keeps the source's; otherwise the data's:
    the paper's mean subtraction (0-255 range), with ``normalize=standardize`` also a division by
    the per-channel std (unit-variance inputs, which small Glorot-initialised nets without batch
    norm train faster from)."""
    mean, pca = pixel_stats(pixels_)
    if choice in PRESETS:
        return Preprocess.preset(choice), pca
    if choice == "auto" and source is not None:
        return source, pca
    prep = Preprocess.preset("paper", mean=mean)
    if normalize == "standardize":
        std = tuple(max(s, 1e-3) for s in pixels_.float().std(0).tolist())
        prep = Preprocess(prep.mean, std, prep.pixel_range, prep.bgr)
    return prep, pca


def _sample_folder_pixels(samples: list, n_images: int = 500, side: int = 64) -> torch.Tensor:
    """Pixels of up to ``n_images`` training photos, shrunk to ``side`` (mean and PCA barely move).
    Shared between the runs of one process (a study trains twenty nets on one set): keyed by each
    picked file's path, size and time, so a file that changes is read again. Do not modify it."""
    rng = random.Random(SPLIT_SEED)
    picked = rng.sample(samples, min(n_images, len(samples)))
    return _folder_pixels(tuple((str(path), *_stamp(path)) for path, _ in picked), side)


def _stamp(path: str | Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:  # unreadable: load_image says so, and the photo is skipped
        return -1, -1
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _folder_pixels(files: tuple[tuple[str, int, int], ...], side: int) -> torch.Tensor:
    chunks = []
    for path, *_ in files:
        try:
            img = rescale_smallest(load_image(path, min_side=side), side)
        except BadImageError:
            continue
        chunks.append(torch.as_tensor(bytearray(img.tobytes()), dtype=torch.uint8).view(-1, 3))
    if not chunks:
        raise ValueError("no readable training images to compute the mean pixel from")
    return torch.cat(chunks)


def _micro_batch(cfg: RunConfig, env: DistEnv) -> tuple[int, int]:
    """(per-rank micro-batch, accumulation steps) for the global batch."""
    b = cfg.optim.batch_size
    if b % env.world_size:
        raise ValueError(f"optim.batch_size {b} is not divisible by {env.world_size} processes")
    per_rank = b // env.world_size
    micro = cfg.optim.micro_batch or per_rank
    if per_rank % micro:
        raise ValueError(f"per-process batch {per_rank} is not a multiple of optim.micro_batch {micro}")
    return micro, per_rank // micro


def build_data(
    cfg: RunConfig, env: DistEnv, device: torch.device, source: Preprocess | None = None
) -> tuple[DataBundle, int]:
    """The ``DataBundle`` for this rank, and the gradient accumulation steps. ``source``: the
    input convention of the checkpoint the net starts from (``data.preprocess=auto`` keeps it)."""
    micro, accum = _micro_batch(cfg, env)
    if cfg.data.dataset == "fashion-mnist":
        return _fashion_mnist(cfg, env, micro, device, source), accum
    return _image_folder(cfg, env, micro, device, source), accum


def _fashion_mnist(
    cfg: RunConfig, env: DistEnv, micro: int, device: torch.device, source: Preprocess | None
) -> DataBundle:
    d, crop = cfg.data, cfg.model.crop_size
    images, labels = load_fashion_mnist(d.root, "train")
    if d.subset:
        images, labels = images[: d.subset], labels[: d.subset]
    tr, va = split_indices(len(images), d.val_fraction)
    if d.grey_to_rgb:  # an explicit choice: 3-channel nets (e.g. for transfer) see grey as RGB
        images = images.expand(-1, 3, -1, -1).contiguous()
    pix = images[tr].permute(0, 2, 3, 1).reshape(-1, images.shape[1])
    prep, pca = input_preprocess(pix, d.normalize, d.preprocess, source)
    scale = (pixels(d.scale[0], crop), pixels(d.scale[-1], crop))
    q = pixels(d.eval_scale, crop)

    def train_prepare(x: torch.Tensor) -> torch.Tensor:
        params = random_crop_params(len(x), tuple(x.shape[-2:]), scale, crop, d.flip)
        colour = (
            pca.sample(len(x), d.colour_shift).to(x.device, non_blocking=True) if d.colour_shift else None
        )
        return prep(scale_crop_flip(x, crop, *params), colour)

    def eval_prepare(x: torch.Tensor) -> torch.Tensor:
        return prep(scale_crop_flip(x, crop, *centre_crop_params(len(x), tuple(x.shape[-2:]), q, crop)))

    def batches(imgs: torch.Tensor, lbls: torch.Tensor, train: bool) -> TensorBatches:
        order = EpochOrder(len(imgs), micro, cfg.train.seed, env.rank, env.world_size, shuffle=train)
        return TensorBatches(imgs, lbls, order)

    test = None
    if cfg.train.eval_test:
        ti, tl = load_fashion_mnist(d.root, "test")
        test = batches(ti.expand(-1, images.shape[1], -1, -1), tl, False)
    val = batches(images[va], labels[va], False) if len(va) else None
    return DataBundle(
        classes=FMNIST_CLASSES,
        channels=images.shape[1],
        train=batches(images[tr], labels[tr], True),
        val=val,
        test=test,
        train_prepare=train_prepare,
        eval_prepare=eval_prepare,
        preprocess=prep,
        pca=pca,
    )


def _scan(cfg: RunConfig) -> tuple[list, list[str], Callable[[], list] | None]:
    """(training samples, classes, a function giving the test samples or None) of a photo set:
    a VOC tree's ``data.train_split`` and ``data.test_split``, or an image folder's ``train/``
    (the root itself when it has none) and ``val/`` or ``test/``."""
    d, root = cfg.data, Path(cfg.data.root)
    if d.dataset == "voc":
        train = resolve_split("voc", root, d.train_split)
        try:
            test = resolve_split("voc", root, d.test_split)
        except ValueError:
            if cfg.train.eval_test:  # a typo must not silently drop the test error
                raise ValueError(
                    f"data.test_split {d.test_split!r}: no {split_file(root, d.test_split)} "
                    "(or set train.eval_test=false)"
                ) from None
            test = None
    else:
        has = [s for s in ("train", "val", "test") if (root / s).is_dir()]
        split = "train" if "train" in has else ""
        train = resolve_split(
            "imagefolder", root, split, hint=f"put the training classes in {root / 'train'}"
        )
        test_name = next((s for s in ("val", "test") if s in has), None)
        test = resolve_split("imagefolder", root, test_name) if test_name else None
    samples, classes = train.samples()
    return samples, classes, (lambda: test.samples(classes)[0]) if test else None


def _image_folder(
    cfg: RunConfig, env: DistEnv, micro: int, device: torch.device, source: Preprocess | None
) -> DataBundle:
    d, crop = cfg.data, cfg.model.crop_size
    samples, classes, test_samples = _scan(cfg)
    if d.subset and d.subset < len(samples):  # spread over the class-sorted list: every class keeps its share
        samples = [samples[i] for i in spread_indices(len(samples), d.subset)]
    tr, va = split_indices(len(samples), d.val_fraction)
    train_samples = [samples[i] for i in tr.tolist()]
    prep, pca = input_preprocess(_sample_folder_pixels(train_samples), d.normalize, d.preprocess, source)
    workers = decoding_workers(d.workers, device, cpu_auto=8)  # CPU: decoding overlaps the step
    pin = device.type == "cuda"
    scale = (pixels(d.scale[0], crop), pixels(d.scale[-1], crop))
    centre = CentreCropTransform(pixels(d.eval_scale, crop), crop)

    def batches(subset: list, transform: Callable, train: bool) -> FolderBatches:
        order = EpochOrder(len(subset), micro, cfg.train.seed, env.rank, env.world_size, shuffle=train)
        return FolderBatches(
            ImageFolderDataset(subset, transform, d.on_bad_image, d.exif), order, workers, pin
        )

    def train_prepare(x: torch.Tensor) -> torch.Tensor:
        colour = (
            pca.sample(len(x), d.colour_shift).to(x.device, non_blocking=True) if d.colour_shift else None
        )
        return prep(x, colour)

    val_samples = [samples[i] for i in va.tolist()]
    if d.augment == "torchvision":
        train_tf: Callable = RandomResizedCropTransform(crop, d.flip)
    else:  # tensor path: fast JPEG decoding + torch uint8 resize (experiments/bench_notes.md)
        train_tf = TrainTransform(scale, crop, d.flip, tensor_input=True)
    test = batches(test_samples(), centre, False) if cfg.train.eval_test and test_samples else None
    return DataBundle(
        classes=classes,
        channels=3,
        train=batches(train_samples, train_tf, True),
        val=batches(val_samples, centre, False) if val_samples else None,
        test=test,
        train_prepare=train_prepare,
        eval_prepare=prep,
        preprocess=prep,
        pca=pca,
    )
