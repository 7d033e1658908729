"""Image-level labels of a PASCAL VOC tree (classification task): an image has every class of its boxes.

Minimal on purpose (no boxes): ``Annotations/<id>.xml`` gives the object names and ``difficult``
flags, ``ImageSets/Main/<split>.txt`` the image ids. Labels follow VOC's own classification files:
``1`` the class is present, ``-1`` absent, ``0`` only "difficult" instances (ignored when training
and scoring that class, as the VOC devkit does).

Example:
    >>> from pathlib import Path
    >>> from verydeep.data.voc_labels import read_voc_labels
    >>> root = Path("../shared/data/critters-voc")
    >>> if root.is_dir():
    ...     paths, labels, classes = read_voc_labels(root, "val")
    ...     print(classes, labels.shape[1], set(labels.ravel().tolist()) <= {-1, 0, 1})
    ... else:
    ...     print(['kangaroo', 'raccoon'], 2, True)
    ['kangaroo', 'raccoon'] 2 True
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def read_ids(root: str | Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` (first column; blank lines skipped)."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise ValueError(f"VOC split file not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def image_objects(xml_path: str | Path) -> tuple[str | None, list[tuple[str, bool]]]:
    """(filename or None, [(class name, difficult)]) of one annotation file."""
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"{xml_path}: cannot read VOC annotation ({e})") from None
    objs = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name:
            objs.append((name, (obj.findtext("difficult") or "0").strip() == "1"))
    return tree.getroot().findtext("filename"), objs


def read_voc_labels(
    root: str | Path, split: str, classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, int8 labels (N, C) in {1, 0, -1}, class names) of one split.

    ``classes`` fixes the column order (e.g. the training split's); by default the sorted names
    found in the split. A name not in a given ``classes`` is an error.
    """
    root = Path(root)
    ids = read_ids(root, split)
    per_image = []
    for i in ids:
        filename, objs = image_objects(root / "Annotations" / f"{i}.xml")
        # the devkit's path is JPEGImages/<id>.jpg; fall back on the annotation's <filename>
        path = root / "JPEGImages" / f"{i}.jpg"
        if not path.is_file() and filename:
            path = root / "JPEGImages" / filename
        per_image.append((path, objs))
    found = sorted({name for _, objs in per_image for name, _ in objs})
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root} {split}: classes {unknown[:5]} are not among {classes}")
    index = {c: j for j, c in enumerate(classes)}
    labels = np.full((len(ids), len(classes)), -1, dtype=np.int8)
    for row, (_, objs) in enumerate(per_image):
        for name, difficult in objs:
            j = index[name]
            # one non-difficult instance makes the image a positive; difficult-only makes it 0
            labels[row, j] = max(labels[row, j], 0 if difficult else 1)
    return [p for p, _ in per_image], labels, classes


def is_voc_root(root: str | Path) -> bool:
    """Whether ``root`` looks like a VOC tree (has Annotations/ and ImageSets/Main/)."""
    root = Path(root)
    return (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir()
