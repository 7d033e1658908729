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

from pathlib import Path

import numpy as np

from .voc import image_path, load_voc


def read_voc_labels(
    root: str | Path, split: str, classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, int8 labels (N, C) in {1, 0, -1}, class names) of one split.

    ``classes`` fixes the column order (e.g. the training split's); by default the sorted names
    found in the split. A name not in a given ``classes`` is an error.
    """
    root = Path(root)
    # the safe reader (no DOCTYPE/entities); a missing annotation or bad XML is a clear error
    per_image = [
        (image_path(root, a), [(o.name, o.difficult) for o in a.objects]) for a in load_voc(root, split)
    ]
    found = sorted({name for _, objs in per_image for name, _ in objs})
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root} {split}: classes {unknown[:5]} are not among {classes}")
    index = {c: j for j, c in enumerate(classes)}
    labels = np.full((len(per_image), len(classes)), -1, dtype=np.int8)
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
