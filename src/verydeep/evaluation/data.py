"""Evaluation images, delivered already rescaled to every test scale Q.

Two kinds of data: an ImageFolder tree (decoded and rescaled with PIL in DataLoader workers,
like the training loader) and in-memory uint8 tensors (Fashion-MNIST, rescaled in batches).
``batches`` yields ``(per_q, labels, index, bad)`` where ``per_q[j]`` is either a list of
uint8 (C, H, W) tensors (sizes differ) or one (B, C, H, W) tensor, rescaled to ``q_pixels[j]``.

Example:
    >>> import torch
    >>> d = EvalData(classes=["a", "b"], images=torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
    ...              labels=torch.tensor([0, 1, 1]))
    >>> per_q, labels, index, bad = next(batches(d, [32, 37]))
    >>> [tuple(x.shape) for x in per_q], labels.tolist(), bad
    ([(3, 1, 32, 32), (3, 1, 37, 37)], [0, 1, 1], 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.fashion_mnist import CLASSES as FASHION_CLASSES
from ..data.fashion_mnist import load_fashion_mnist
from ..data.folder import ImageFolderDataset
from ..data.loaders import spread_indices
from ..data.sources import resolve_split
from ..data.voc_labels import is_voc_root
from .core import rescale


@dataclass
class EvalData:
    """Labelled images: ``samples`` (path, label) from a folder, or ``images`` uint8 tensors."""

    classes: list[str]
    samples: list[tuple[Path, int]] | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.labels)

    def label_tensor(self) -> torch.Tensor:
        if self.labels is not None:
            return self.labels
        return torch.tensor([label for _, label in self.samples])

    def subset(self, limit: int | None) -> EvalData:
        """``limit`` images evenly spread over the set (every class keeps its share)."""
        if not limit or limit >= len(self):
            return self
        keep = spread_indices(len(self), limit)
        if self.samples is not None:
            return EvalData(self.classes, samples=[self.samples[i] for i in keep], name=self.name)
        return EvalData(self.classes, images=self.images[keep], labels=self.labels[keep], name=self.name)


def is_fashion_mnist(spec: str) -> bool:
    """``fashion-mnist`` or ``fashion-mnist:ROOT``: the arrays, not a folder of photos."""
    return spec == "fashion-mnist" or spec.startswith("fashion-mnist:")


def open_data(spec: str, classes: list[str] | None = None, split: str | None = None) -> EvalData:
    """``spec``: an ImageFolder directory (``split``, if given, is a sub-folder of it, as in
    ``verydeep features``), a VOC root (its ``split``, by default ``val``; each image labelled
    with its largest object's class, as ``data.dataset=voc`` trains), ``fashion-mnist`` or
    ``fashion-mnist:ROOT`` (test split; no other split is read).

    ``classes`` (the net's) fixes the label order; classes it lacks are an error.
    """
    if is_fashion_mnist(spec):
        if split not in (None, "test"):  # only the test split exists here
            raise ValueError(f"Fashion-MNIST is evaluated on its test split; --split {split} does not apply")
        s = resolve_split("fashion-mnist", spec.partition(":")[2], "test")
        images, labels = load_fashion_mnist(s.root, s.split)
        return EvalData(list(FASHION_CLASSES), images=images, labels=labels, name=s.name)
    s = resolve_split("auto", spec, split or ("val" if is_voc_root(spec) else ""))  # eval's default: val
    samples, found = s.samples(classes or None)
    return EvalData(found, samples=samples, name=s.name)


class MultiScale:
    """PIL image -> tuple of uint8 (C, H, W), one per Q (smallest side in pixels)."""

    def __init__(self, q_pixels: list[int], fast_decode: bool = True) -> None:
        self.q_pixels = list(q_pixels)
        # libjpeg may decode at a reduced size that still exceeds the largest Q (see load_image)
        self.min_side = max(self.q_pixels) if fast_decode else None

    def __call__(self, img) -> tuple[torch.Tensor, ...]:
        return tuple(rescale(img, q) for q in self.q_pixels)


def _collate(batch: list) -> tuple[list[list[torch.Tensor]], torch.Tensor, torch.Tensor, int]:
    good = [b for b in batch if b is not None]
    n_q = len(good[0][0]) if good else 0
    per_q = [[g[0][j] for g in good] for j in range(n_q)]
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    index = torch.tensor([g[2] for g in good], dtype=torch.long)
    return per_q, labels, index, len(batch) - len(good)


def batches(
    data: EvalData,
    q_pixels: list[int],
    batch_size: int = 16,
    workers: int = 0,
    fast_decode: bool = True,
    exif: bool = True,
    pin_memory: bool = False,
) -> Iterator[tuple[list, torch.Tensor, torch.Tensor, int]]:
    """Yield ``(per_q, labels, index, bad)``; ``bad`` counts unreadable files skipped.
    ``pin_memory``: page-locked batches, so the copies to a GPU run asynchronously."""
    if data.images is not None:
        for start in range(0, len(data), max(batch_size, 256)):
            x = data.images[start : start + max(batch_size, 256)]
            index = torch.arange(start, start + len(x))
            yield [rescale(x, q) for q in q_pixels], data.labels[index], index, 0
        return
    ds = ImageFolderDataset(data.samples, MultiScale(q_pixels, fast_decode), exif=exif)
    loader = DataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate, pin_memory=pin_memory
    )
    yield from loader
