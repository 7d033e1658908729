"""Shrink a photo collection once, so every later epoch decodes small JPEGs.

Training rescales each image so its smallest side is S <= Smax; pixels beyond Smax are decoded
every epoch and thrown away. ``preresize`` writes a copy of an ImageFolder tree (same relative
paths) where every image whose smallest side exceeds ``smallest_side`` is rescaled to exactly
``smallest_side`` (isotropic, antialiased, the training transform's own resampling) and re-encoded as
JPEG; images already small enough are copied byte for byte (no second lossy encode). Bad files
are skipped and counted. It resumes: files already in the destination are left alone. The
settings are recorded in ``DST/.preresize.json``, so a rerun with another size or quality is
refused instead of mixing two sizes in one tree.

Set ``smallest_side`` to the largest S used in paper units at your crop (e.g. 512 for S in
[256, 512] at crop 224); training from the copy is then the same up to JPEG re-encoding.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from verydeep.io.preresize import preresize
    >>> src, dst = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()) / "small"
    >>> (src / "cat").mkdir()
    >>> Image.new("RGB", (800, 600), "red").save(src / "cat" / "a.jpg")
    >>> preresize(src, dst, smallest_side=300)["resized"], Image.open(dst / "cat" / "a.jpg").size
    (1, (400, 300))
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..data.images import IMAGE_EXTENSIONS, BadImageError, header_orientation, load_image
from ..data.transforms import rescale_smallest
from .files import atomic_write, replacing

RECORD = ".preresize.json"  # a dot file: ``plan`` and the image readers skip it


def _one(src: Path, dst: Path, smallest_side: int, quality: int, exif: bool = True) -> str:
    """Write ``dst`` from ``src``; returns what was done: resized, copied, exists or bad."""
    if dst.exists():
        return "exists"
    try:
        img = load_image(src, min_side=smallest_side, exif=exif)  # JPEG draft: no bigger than needed
        turned = exif and 2 <= header_orientation(src) <= 8  # 2-8: a flip or a turn
    except BadImageError:
        return "bad"
    if min(img.size) > smallest_side:
        try:
            img = rescale_smallest(img, smallest_side)
        except BadImageError:
            return "bad"
        done = "resized"
    elif src.suffix.lower() in (".jpg", ".jpeg") and not turned:
        done = "copied"
    else:  # small non-JPEG (PNG, GIF...) or turned upright: re-encoded, uniformly RGB JPEG
        done = "resized"
    dst.parent.mkdir(parents=True, exist_ok=True)
    with replacing(dst) as tmp:  # never a half-written file under the final name
        if done == "copied":
            shutil.copyfile(src, tmp)
        else:
            img.save(tmp, "JPEG", quality=quality)
    return done


def plan(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs for every image under ``src``; non-JPEGs get a .jpg suffix."""
    pairs = []
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            rel = p.relative_to(src)
            if p.suffix.lower() not in (".jpg", ".jpeg"):
                rel = rel.with_name(rel.name + ".jpg")
            pairs.append((p, dst / rel))
    return pairs


def check_trees(src: str | Path, dst: str | Path) -> tuple[Path, Path]:
    """The source folder exists, the destination is named, and neither tree lies inside the other
    (copies would land among the originals, or be read back as sources on a rerun)."""
    if not str(dst).strip():  # Path("") is the working directory
        raise ValueError("the destination folder is empty: name a new folder")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"source folder not found: {src}")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise ValueError("the destination must lie outside the source tree")
    if d in s.parents:
        raise ValueError("the source must lie outside the destination tree")
    return src, dst


def check_record(dst: Path, settings: dict) -> None:
    """Refuse to resume into ``dst`` with settings other than the ones it was made with; a tree
    with images but no record is not ours to add to (its images would be kept as they are)."""
    record = dst / RECORD
    if record.is_file():
        try:
            made = json.loads(record.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{record} is not a preresize record: name a new destination") from None
        if made != settings:
            words = ", ".join(f"{k} {v}" for k, v in made.items())
            raise ValueError(f"{dst} was made with {words}: rerun with those, or name a new destination")
    elif dst.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in dst.rglob("*")):
        raise ValueError(f"{dst} already holds images that preresize did not record: name a new destination")


def settings_of(smallest_side: int, quality: int, exif: bool) -> dict:
    """What ``DST/.preresize.json`` records (the values that change the written pixels)."""
    return {"smallest_side": smallest_side, "quality": quality, "exif": exif}


def preresize(
    src: str | Path,
    dst: str | Path,
    smallest_side: int,
    quality: int = 90,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    exif: bool = True,
) -> dict[str, int]:
    """Copy the image tree ``src`` to ``dst`` with smallest sides capped at ``smallest_side``;
    with ``exif`` (default, as training reads them) photographs are written upright and a
    JPEG that needed turning is re-encoded instead of copied (the copy would keep no tag)."""
    src, dst = check_trees(src, dst)
    if smallest_side < 1 or not 1 <= quality <= 100:
        raise ValueError(
            f"the smallest side must be positive and the quality in 1..100, got {smallest_side}, {quality}"
        )
    settings = settings_of(smallest_side, quality, exif)
    check_record(dst, settings)
    pairs = plan(src, dst)
    if not pairs:
        raise ValueError(f"{src}: no images found")
    atomic_write(dst / RECORD, json.dumps(settings).encode())  # before the first image is written
    counts = {"resized": 0, "copied": 0, "exists": 0, "bad": 0}
    n = len(pairs)
    args = ([s for s, _ in pairs], [d for _, d in pairs], [smallest_side] * n, [quality] * n, [exif] * n)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_one, *args, chunksize=16)
            for done in results:
                counts[done] += 1
                if progress:
                    progress(1)
    else:
        for done in map(_one, *args):
            counts[done] += 1
            if progress:
                progress(1)
    return counts
