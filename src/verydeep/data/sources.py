"""One resolver from (data set, root, split) to the split a command reads. train, eval,
features, localize and the study name their data the same way and get the same errors:

- ``fashion-mnist``: the four IDX files in ``root`` (the Debian package's folder when empty);
  splits ``train`` and ``test``.
- ``voc`` (a tree with ``Annotations/`` and ``ImageSets/Main/``): ``split`` names
  ``ImageSets/Main/<split>.txt``, slices such as ``train[:80%]`` included. Required: a VOC tree
  has no split that could be meant by default, and train descriptors taken for test ones would
  give no error later.
- ``imagefolder``: ``split`` is a sub-folder (``train``, ``val``); without one the root itself
  holds the classes, and a root holding ``train/``, ``val/`` or ``test/`` is refused (its splits
  would become classes).
- ``auto``: ``voc`` for a VOC tree, else ``imagefolder``.

A split then gives single-label samples (a VOC image is its largest object's class, as
``data.dataset=voc`` trains), multi-label rows (VOC's classification labels; features and the
SVMs) or box annotations (localisation).

Example:
    >>> from verydeep.data.sources import resolve_split
    >>> s = resolve_split("fashion-mnist", "", "test")
    >>> s.kind, s.split, s.name
    ('fashion-mnist', 'test', 'fashion-mnist test')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fashion_mnist import DEFAULT_ROOT
from .folder import check_not_split_root, scan_image_folder
from .voc import VocAnnotation, image_level_samples, load_voc, split_file
from .voc_labels import is_voc_root, read_voc_labels

KINDS = ("auto", "fashion-mnist", "voc", "imagefolder")
FASHION_SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataSplit:
    """A resolved split: ``kind`` (fashion-mnist | voc | imagefolder), ``root`` and ``split``
    ("" for an ImageFolder root read as a whole)."""

    kind: str
    root: Path
    split: str = ""

    @property
    def name(self) -> str:
        if self.kind == "fashion-mnist":
            return f"fashion-mnist {self.split}"
        if self.kind == "voc":
            return f"{self.root} ({self.split})"
        return str(self.folder)

    @property
    def folder(self) -> Path:
        """An ImageFolder split's class folders' parent."""
        return self.root / self.split if self.split else self.root

    def samples(self, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
        """Single-label (path, label) pairs and the class names; ``classes`` fixes the order."""
        if self.kind == "voc":
            return image_level_samples(self.root, self.split, classes)
        self._photos_only()
        return scan_image_folder(self.folder, classes)

    def labelled(self, classes: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
        """(paths, labels, classes): VOC's int8 (N, C) labels in {1, 0, -1}, an ImageFolder's
        (N,) class indices."""
        if self.kind == "voc":
            return read_voc_labels(self.root, self.split, classes)
        samples, classes = self.samples(classes)
        return [p for p, _ in samples], np.array([y for _, y in samples], dtype=np.int64), classes

    def annotations(self) -> list[VocAnnotation]:
        """The boxes of every image of a VOC split."""
        if self.kind != "voc":
            raise ValueError(f"{self.root} is not a VOC tree (Annotations/, ImageSets/Main/): boxes need one")
        return load_voc(self.root, self.split)

    def _photos_only(self) -> None:
        if self.kind == "fashion-mnist":
            raise ValueError("Fashion-MNIST is arrays, not photographs: read it with data.fashion_mnist")


def resolve_split(
    dataset: str, root: str | Path, split: str = "", hint: str = "name one with --split"
) -> DataSplit:
    """The split of ``dataset`` (``KINDS``) at ``root`` named ``split``, checked: a missing
    folder or split file, a VOC tree without a split, or a split root read as classes (``hint``
    says what to do instead) is a one-line error."""
    if dataset not in KINDS:
        raise ValueError(f"data set must be one of {', '.join(KINDS)}, got {dataset!r}")
    if dataset == "fashion-mnist":
        if split not in FASHION_SPLITS:
            raise ValueError(f"Fashion-MNIST has the splits {' and '.join(FASHION_SPLITS)}, not {split!r}")
        return DataSplit("fashion-mnist", Path(root or DEFAULT_ROOT), split)
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    kind = dataset if dataset != "auto" else "voc" if is_voc_root(root) else "imagefolder"
    if kind == "voc" and not is_voc_root(root):
        raise ValueError(f"{root} is not a VOC dataset (no Annotations/ and ImageSets/Main/ folders)")
    if kind == "voc":
        if not split:
            raise ValueError(f"{root} is a VOC root: name its split (e.g. --split train or --split val)")
        if not split_file(root, split).is_file():
            raise ValueError(f"no split file {split_file(root, split)}")
        return DataSplit("voc", root, split)
    if split and not (root / split).is_dir():
        raise ValueError(f"{root} has no split folder {split!r} ({root / split} not found)")
    if not split:
        check_not_split_root(root, hint)
    return DataSplit("imagefolder", root, split)
