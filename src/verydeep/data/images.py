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
import torchvision.io as tio
from PIL import Image, ImageFile, ImageOps

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


class BadImageError(ValueError):
    """An image file that cannot be read as a photograph."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB; 16-bit and float greyscale are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str | Path, min_side: int | None = None, exif: bool = True) -> Image.Image:
    """Decode ``path`` to an RGB PIL image, turned upright by its EXIF orientation if ``exif``.

    With ``min_side`` a JPEG is decoded at the smallest power-of-two reduction whose smaller
    side is still >= ``min_side`` (libjpeg's DCT scaling: much faster, no quality lost once the
    image is resized down to that side anyway).
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: no such file")
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
                return _to_rgb(img)
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
    """Decode ``path`` to a uint8 RGB tensor (3, H, W); JPEGs through torchvision.io.

    torchvision.io (libjpeg-turbo) decodes JPEGs ~13% faster than PIL here; a JPEG big enough
    for draft decoding to shrink it (smaller side >= 2 ``min_side``), any other format, and any
    file torchvision.io refuses (truncated, odd modes) go through ``load_image`` instead.
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg") and path.is_file():
        try:
            with Image.open(path, formats=("JPEG",)) as img:  # header only: cheap
                small = not min_side or min(img.size) < 2 * min_side
                size = img.size
            if small:
                check_size(*size, path)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 notice
                    data = tio.read_file(str(path))
                    return tio.decode_jpeg(data, mode=tio.ImageReadMode.RGB, apply_exif_orientation=exif)
        except (OSError, RuntimeError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            if isinstance(e, BadImageError):
                raise
            # otherwise load_image gives the precise error, or tolerates the truncation
    img = load_image(path, min_side, exif)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


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
