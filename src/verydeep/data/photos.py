"""Photographs for descriptors: labelled sets on disk, decoded once and rescaled to every scale.

``labelled_images`` reads a VOC tree (multi-label) or an ImageFolder tree; ``PathImages`` is the
dataset ``features.describe_paths`` feeds through DataLoader workers (``loaders.decoding_workers``).

Example:
    >>> from PIL import Image
    >>> from verydeep.data.photos import rescale_to_sides
    >>> [t.shape for t in rescale_to_sides(Image.new("RGB", (60, 40)), [32, 48], 1, "LRGB")]
    [torch.Size([3, 32, 48]), torch.Size([3, 48, 72])]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .images import BadImageError, load_image
from .sources import resolve_split
from .transforms import rescaled_size

log = logging.getLogger(__name__)


def labelled_images(
    root: str | Path, split: str = "", classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """(paths, labels, classes) of a VOC tree's ``split`` (multi-label; required) or an ImageFolder
    tree (``split``, if given, a sub-folder): ``sources.resolve_split``'s rules."""
    return resolve_split("auto", root, split).labelled(classes)


def rescale_to_sides(img: Image.Image, sides: list[int], step: int, mode: str) -> list[torch.Tensor]:
    """uint8 (C, H, W) of ``img`` rescaled to each smaller side in ``sides`` (colour ``mode``:
    RGB, L, or LRGB = grey replicated to RGB), as descriptors see it."""
    if mode != "RGB":
        img = img.convert("L")
        img = img.convert("RGB") if mode == "LRGB" else img
    out = []
    for side in sides:
        h, w = rescaled_size(img.height, img.width, side, round_to=step)
        resized = TF.resize(img, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        out.append(TF.pil_to_tensor(resized))
    return out


class PathImages(torch.utils.data.Dataset):
    """Decode once, rescale to every scale: item i -> (i, [uint8 (C, H, W) per scale] or None)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        sides: list[int],
        step: int,
        mode: str,
        fail: bool,
        exif: bool = True,
    ):
        self.paths, self.sides, self.step, self.mode, self.fail = paths, sides, step, mode, fail
        self.exif = exif

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, list[torch.Tensor] | str | None]:
        try:
            img = load_image(self.paths[i], min_side=max(self.sides), exif=self.exif)
        except BadImageError as e:
            if self.fail:  # raised by the main process: from a worker it would carry a traceback
                return i, str(e)
            log.warning("skipping bad image: %s", e)
            return i, None
        return i, rescale_to_sides(img, self.sides, self.step, self.mode)


def first_item(batch: list) -> object:
    """DataLoader collate for batches of one: the item itself (buckets are formed downstream)."""
    return batch[0]
