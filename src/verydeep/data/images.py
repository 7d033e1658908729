"""Reading photographs: every mode to RGB, only the formats we mean to read, clear failures.

What one image may cost is bounded before it is decoded: at most ``MAX_PIXELS`` declared pixels
and a long side at most ``MAX_ASPECT`` times the short one (a 1,000,000 x 1 PNG of 201 bytes
would otherwise become a 12 GB tensor once its short side is rescaled to S); ``rescale_smallest``
checks the rescaled size too. Such a file is a ``BadImageError``, skipped and counted like any
unreadable image. EXIF orientation is honoured by default (a phone photograph taken upright is
decoded upright); ``exif=False`` reads the pixels as stored.

Example:
    >>> from verydeep.data.images import load_image
    >>> load_image("/nonexistent.jpg")
    Traceback (most recent call last):
    ...
    verydeep.data.images.BadImageError: /nonexistent.jpg: no such file
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

try:  # libjpeg-turbo 3 in a self-contained wheel: faster than torchvision.io's and PIL's builds here
    # (7-27% and 20-48% on three photo folders; experiments/bench_notes.md)
    import simplejpeg
except ImportError:  # a platform without its wheel: every JPEG goes through PIL
    simplejpeg = None

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "PPM", "TIFF")  # what Image.open may accept
MAX_PIXELS = 120_000_000  # larger declared sizes are refused as decompression bombs
MAX_ASPECT = 25  # long side / short side; wider panoramas than this are refused


def check_size(width: int, height: int, path: str | Path) -> None:
    """Refuse (``BadImageError``) a declared size beyond ``MAX_PIXELS`` or ``MAX_ASPECT``."""
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise BadImageError(f"{path}: {width}x{height} is outside the pixel limit ({MAX_PIXELS:,})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImageError(f"{path}: {width}x{height} is longer than {MAX_ASPECT}:1, refused")


def is_image_file(path: Path) -> bool:
    """A file with one of the extensions the readers accept (its content is checked on reading)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def find_images(folder: str | Path, what: str = "folder") -> list[Path]:
    """Every image file under ``folder`` at any depth, sorted; ``what`` names it in errors."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{what} {folder} does not exist")
    found = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not found:
        raise ValueError(f"{what} {folder} holds no images")
    return found


class BadImageError(ValueError):
    """An image file that cannot be read as a photograph."""


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Convert any mode to 8-bit RGB; 16-bit and float greyscale are rescaled, not clipped. A
    float image holding NaN or inf is a ``BadImageError`` (skipped and counted like any bad
    file): such a pixel has no brightness to give it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise BadImageError(f"{path}: {int((~np.isfinite(arr)).sum())} pixels are NaN or infinite")
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def file_problem(path: Path) -> str:
    """Why ``path`` cannot be read as a file: a folder says so (a photo folder given where files
    are wanted is a likely slip), anything else is missing."""
    return "is a directory, not a file" if path.is_dir() else "no such file"


def load_image(path: str | Path, min_side: int | None = None, exif: bool = True) -> Image.Image:
    """Decode ``path`` to an RGB PIL image, turned upright by its EXIF orientation if ``exif``.

    With ``min_side`` a JPEG is decoded at the smallest power-of-two reduction whose smaller
    side is still >= ``min_side`` (libjpeg's DCT scaling: much faster, no quality lost once the
    image is resized down to that side anyway).
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: {file_problem(path)}")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as img:
                check_size(img.width, img.height, path)
                if min_side and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                    scale = min(img.size) / min_side
                    img.draft(img.mode, (int(img.width / scale) + 1, int(img.height / scale) + 1))
                _load_tolerating_truncation(img, path)
                if exif:
                    img = ImageOps.exif_transpose(img)  # a copy only where a turn is needed
                return _to_rgb(img, path)
    except BadImageError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise BadImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None


def load_image_tensor(path: str | Path, min_side: int | None = None, exif: bool = True) -> torch.Tensor:
    """Decode ``path`` to a uint8 RGB tensor (3, H, W); JPEGs through libjpeg-turbo 3 (simplejpeg).

    The tensor is a view of the decoder's (H, W, 3) buffer, so its strides are channels_last's:
    resampling a crop from it (``TrainTransform``) reads rows without a layout change. With
    ``min_side`` a JPEG is decoded at the largest power-of-two DCT reduction that keeps its
    smaller side >= ``min_side``, as ``load_image`` does. Any other format, a CMYK JPEG, and any
    file this decoder refuses (truncated, corrupt) go through ``load_image``, which gives the
    precise error or tolerates the truncation.
    """
    path = Path(path)
    if simplejpeg is not None and path.suffix.lower() in (".jpg", ".jpeg") and path.is_file():
        data = path.read_bytes()
        x = _decode_jpeg(data, path, min_side)
        if x is not None:
            return orient(x, exif_orientation(data)) if exif else x
    img = load_image(path, min_side, exif)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _decode_jpeg(data: bytes, path: Path, min_side: int | None) -> torch.Tensor | None:
    """(3, H, W) uint8 view of libjpeg-turbo's RGB output, or None where PIL should decode."""
    try:
        height, width, colour, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colour not in ("YCbCr", "Gray", "RGB"):  # CMYK / YCCK: PIL converts those
        return None
    check_size(width, height, path)
    factor = 1  # power-of-two reductions only: libjpeg-turbo's 3/8, 5/8... are slower than none
    while min_side and factor < 8 and -(-min(width, height) // (2 * factor)) >= min_side:
        factor *= 2
    size = {"min_height": -(-height // factor), "min_width": -(-width // factor)} if factor > 1 else {}
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **size)
    except ValueError:  # truncated or corrupt: load_image tolerates or names the problem
        return None
    return torch.from_numpy(arr).permute(2, 0, 1)


def header_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of any image file (1: as stored), read from its header only."""
    try:
        with Image.open(path) as img:
            return int(img.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError):
        return 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of JPEG bytes; 1 where there is none or it is unreadable.

    Reads the markers up to the first scan: the APP1 "Exif" segment's TIFF header, IFD0, tag
    0x0112. A few microseconds, where opening the file with PIL to ask costs 50-70.
    """
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: no EXIF before the pixels
            break
        seg = data[i + 4 : i + 2 + length]
        if marker == 0xE1 and seg[:6] == b"Exif\0\0":
            return _tiff_orientation(seg[6:])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            width = 4 if int.from_bytes(entry[2:4], order) == 4 else 2  # LONG, else SHORT as the spec says
            value = int.from_bytes(entry[8 : 8 + width], order)
            return value if 1 <= value <= 8 else 1
    return 1


def orient(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) image as displayed, given its EXIF ``orientation`` (what PIL's
    ``ImageOps.exif_transpose`` does to a PIL image), as a view where no copy is needed."""
    if orientation in (5, 6, 7, 8):
        x = x.transpose(-1, -2)  # 5: transpose; 6, 7, 8 add flips below
    flips = {2: (-1,), 3: (-1, -2), 4: (-2,), 6: (-1,), 7: (-1, -2), 8: (-2,)}.get(orientation)
    return x.flip(flips) if flips else x


def _load_tolerating_truncation(img: Image.Image, path: Path) -> None:
    """Decode pixels; a JPEG missing only its tail is kept (rest filled grey) with a warning.

    Photos with a few lost bytes at the end are common in real collections (one is in
    critters-voc); refusing them would lose data, while random bytes still fail to decode.
    """
    try:
        img.load()
    except OSError as e:
        if "truncated" not in str(e) or img.format != "JPEG":
            raise
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            img.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        log.warning("%s: truncated JPEG decoded, missing part filled", path)
