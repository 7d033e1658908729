"""ImageFolder trees (the ILSVRC train/val layout): ``root/<class>/<image>``.

Example:
    >>> from pathlib import Path
    >>> from verydeep.data.folder import scan_image_folder
    >>> root = Path("../shared/data/hymenoptera/train")
    >>> if root.is_dir():
    ...     samples, classes = scan_image_folder(root)
    ...     print(classes, len(samples) > 200)
    ... else:
    ...     print(['ants', 'bees'], True)
    ['ants', 'bees'] True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import BadImageError, is_image_file, load_image, load_image_tensor

log = logging.getLogger(__name__)
SPLIT_FOLDERS = ("train", "val", "test")


def check_not_split_root(root: str | Path, hint: str) -> None:
    """A folder with train/, val/ or test/ inside holds splits, not classes: read as classes, the
    splits became labels (and a val/ beside the training classes was trained on as a class)."""
    found = [f"{s}/" for s in SPLIT_FOLDERS if (Path(root) / s).is_dir()]
    if found:
        raise ValueError(f"{root} holds split folders ({', '.join(found)}), not only classes: {hint}")


def scan_image_folder(
    root: str | Path, classes: list[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Sorted (path, label) pairs and class names; ``classes`` fixes the label order."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        # the list is a checkpoint's or a descriptor file's (--classes-from): name it, not its source
        shown = ", ".join(classes[:8]) + (f", ... ({len(classes)} in all)" if len(classes) > 8 else "")
        raise ValueError(f"{root}: class folders {unknown[:5]} are not among the expected classes: {shown}")
    index = {c: i for i, c in enumerate(classes)}
    samples = [(p, index[d]) for d in found for p in sorted((root / d).rglob("*")) if is_image_file(p)]
    if not samples:
        raise ValueError(f"{root}: no images found (expected {root}/<class>/<image>.jpg)")
    return samples, classes


class ImageFolderDataset(Dataset):
    """Decodes with ``load_image`` and applies ``transform`` (PIL image -> uint8 tensor).

    A file that cannot be decoded is skipped (``on_bad_image="skip"``: the item is ``None`` and
    the collate function drops it, counting it) or raises (``"fail"``).
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Callable,
        on_bad_image: str = "skip",
        exif: bool = True,
    ) -> None:
        self.samples, self.transform, self.on_bad_image = samples, transform, on_bad_image
        self.exif = exif  # honour EXIF orientation (see load_image)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        path, label = self.samples[i]
        t = self.transform
        # a transform that draws its scale S first lets a big JPEG be decoded at the smallest
        # DCT reduction still >= this S, not >= the largest S (30-45% less decoding of a big photo:
        # entropy decoding, which no reduction skips, is most of it)
        s = t.draw_scale() if hasattr(t, "draw_scale") else None
        try:
            load = load_image_tensor if getattr(t, "tensor_input", False) else load_image
            img = load(path, min_side=s or getattr(t, "min_side", None), exif=self.exif)
        except BadImageError as e:
            if self.on_bad_image == "fail":
                raise
            log.warning("skipping bad image: %s", e)
            return None
        return (t(img) if s is None else t(img, s)), label, i


def collate_skip_bad(
    batch: list, shape: tuple[int, ...] = (3, 1, 1)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stack (image, label, index) items; drop ``None`` (bad images) and report how many.

    A batch of only bad images becomes an empty batch of images of ``shape``, so that the net
    can still run on it (see ``engine.train_one_epoch``).
    """
    good = [b for b in batch if b is not None]
    bad = len(batch) - len(good)
    if not good:
        return (
            torch.empty(0, *shape, dtype=torch.uint8),
            torch.empty(0, dtype=torch.long),
            torch.empty(0),
            bad,
        )
    images = torch.stack([g[0] for g in good])
    labels = torch.tensor([g[1] for g in good])
    index = torch.tensor([g[2] for g in good])
    return images, labels, index, bad
