"""PASCAL VOC annotations (the layout ILSVRC's box annotations use too), parsed safely.

A dataset root holds ``Annotations/<id>.xml``, ``JPEGImages/<file>`` and
``ImageSets/Main/<split>.txt`` (one image id per line). Each XML file lists the image size and
any number of ``<object>`` elements with ``name``, ``truncated``, ``difficult`` and a ``bndbox``.

VOC corners are 1-based inclusive pixel indices; they are converted to continuous edges
``(xmin - 1, ymin - 1, xmax, ymax)`` (see ``boxes.py``), so a box drawn over a whole W x H image
becomes ``(0, 0, W, H)``. ``one_based=False`` keeps the numbers as they are (for 0-based sets).

XML is parsed with the standard library after a check with expat that refuses any DOCTYPE (the
only place entities can be declared), so entity-expansion ("billion laughs") and external
entities cannot happen.

Example:
    >>> from verydeep.data.voc import parse_voc_xml
    >>> xml = b'''<annotation><filename>a.jpg</filename><size><width>10</width><height>8</height>
    ... <depth>3</depth></size><object><name>cat</name><difficult>0</difficult>
    ... <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object></annotation>'''
    >>> ann = parse_voc_xml(xml, "a")
    >>> ann.filename, ann.width, ann.height, ann.objects[0].name, ann.objects[0].box
    ('a.jpg', 10, 8, 'cat', (0.0, 1.0, 10.0, 8.0))
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import torch


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 continuous pixel edges
    difficult: bool = False
    truncated: bool = False


@dataclass
class VocAnnotation:
    image_id: str
    filename: str
    width: int
    height: int
    depth: int = 3
    objects: list[VocObject] = field(default_factory=list)

    def boxes(self, classes: list[str] | None = None, difficult: bool = True) -> torch.Tensor:
        """(K, 4) xyxy boxes of the objects (of ``classes`` if given; difficult ones if asked)."""
        keep = self._select(classes, difficult)
        return torch.tensor([o.box for o in keep], dtype=torch.float32).reshape(-1, 4)

    def labels(self, classes: list[str], difficult: bool = True) -> torch.Tensor:
        """(K,) class indices into ``classes``, aligned with ``boxes(classes, difficult)``."""
        return torch.tensor([classes.index(o.name) for o in self._select(classes, difficult)])

    def _select(self, classes: list[str] | None, difficult: bool) -> list[VocObject]:
        return [
            o
            for o in self.objects
            if (classes is None or o.name in classes) and (difficult or not o.difficult)
        ]


class UnsafeXMLError(ValueError):
    """An annotation file with a DOCTYPE or entity declaration (refused, never expanded)."""


def _refuse_doctype(data: bytes, where: str) -> None:
    def refuse(*_args: object) -> None:
        raise UnsafeXMLError(f"{where}: DOCTYPE/ENTITY declarations are not allowed in annotations")

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    try:
        p.Parse(data, True)
    except expat.ExpatError as e:
        raise ValueError(f"{where}: malformed XML ({e})") from None


def _text(node: ET.Element, path: str, where: str, default: str | None = None) -> str:
    child = node.find(path)
    if child is None or child.text is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing <{path}>")
    return child.text.strip()


def parse_voc_xml(data: bytes, image_id: str, where: str = "", one_based: bool = True) -> VocAnnotation:
    """One VOC annotation from its XML bytes; ``where`` names the file in error messages."""
    where = where or image_id
    _refuse_doctype(data, where)
    root = ET.fromstring(data)
    w = int(float(_text(root, "size/width", where)))
    h = int(float(_text(root, "size/height", where)))
    ann = VocAnnotation(image_id, _text(root, "filename", where, f"{image_id}.jpg"), w, h)
    ann.depth = int(float(_text(root, "size/depth", where, "3")))
    off = 1.0 if one_based else 0.0
    for obj in root.findall("object"):
        corners = [float(_text(obj, f"bndbox/{k}", where)) for k in ("xmin", "ymin", "xmax", "ymax")]
        box = (corners[0] - off, corners[1] - off, corners[2], corners[3])
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{where}: empty box {corners} for {_text(obj, 'name', where)!r}")
        ann.objects.append(
            VocObject(
                name=_text(obj, "name", where),
                box=box,
                difficult=_text(obj, "difficult", where, "0") == "1",
                truncated=_text(obj, "truncated", where, "0") == "1",
            )
        )
    return ann


_SLICE = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<a>\d{1,3})?%?:(?P<b>\d{1,3})?%?\]$")


def split_file(root: str | Path, split: str) -> Path:
    """``ImageSets/Main/<name>.txt`` of a split, slice notation (``train[:80%]``) included."""
    m = _SLICE.match(split)
    return Path(root) / "ImageSets" / "Main" / f"{m['name'] if m else split}.txt"


def read_split(root: str | Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt`` (first column, blank lines skipped).

    ``name[a%:b%]`` takes a slice (like tfds): ``train[:80%]`` and ``train[80%:]`` split train
    in two without overlap, e.g. to choose settings on images the nets did not train on. The
    slice is cut from the ids ordered by their MD5 digest, a fixed order that is the same on
    every machine and not sorted by class (split files often are), kept in file order after.
    """
    m = _SLICE.match(split)
    path = split_file(root, split)
    if not path.is_file():
        raise ValueError(f"no split file {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not m:
        return ids
    a, b = int(m["a"] or 0), int(m["b"] or 100)
    if not 0 <= a < b <= 100:
        raise ValueError(f"split slice {split!r} must be name[a%:b%] with 0 <= a < b <= 100")
    mixed = sorted(ids, key=lambda i: hashlib.md5(i.encode()).hexdigest())
    keep = set(mixed[round(len(ids) * a / 100) : round(len(ids) * b / 100)])
    return [i for i in ids if i in keep]


def load_voc(root: str | Path, split: str, one_based: bool = True) -> list[VocAnnotation]:
    """Annotations of every image in a split of a VOC-layout dataset."""
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise ValueError(f"{root} is not a VOC dataset (no Annotations/ folder)")
    anns = []
    for image_id in read_split(root, split):
        path = root / "Annotations" / f"{image_id}.xml"
        if not path.is_file():
            raise ValueError(f"{path}: annotation listed in {split}.txt is missing")
        anns.append(parse_voc_xml(path.read_bytes(), image_id, str(path), one_based))
    return anns


def image_path(root: str | Path, ann: VocAnnotation) -> Path:
    return Path(root) / "JPEGImages" / ann.filename


def voc_classes(anns: list[VocAnnotation]) -> list[str]:
    """Sorted class names that occur in ``anns``."""
    return sorted({o.name for a in anns for o in a.objects})


def image_level_samples(
    root: str | Path, split: str, classes: list[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Single-label (path, class) pairs for training a classifier on a VOC split.

    An image's label is the class of its largest non-difficult object (of its largest object if
    all are difficult); images without objects are left out. ``classes`` fixes the label order
    (default: the sorted names found).
    """
    anns = [a for a in load_voc(root, split) if a.objects]
    classes = list(classes) if classes is not None else voc_classes(anns)
    unknown = sorted(set(voc_classes(anns)) - set(classes))
    if unknown:
        raise ValueError(f"{root} {split}: classes {unknown[:5]} are not among {classes}")
    samples = []
    for a in anns:
        objs = [o for o in a.objects if not o.difficult] or a.objects
        big = max(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
        samples.append((image_path(root, a), classes.index(big.name)))
    return samples, classes
