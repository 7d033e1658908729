"""A corpus of awkward and hostile image files, written by PIL (and by hand) for the tests.

``make_corpus(folder)`` returns {file name: expected outcome}: "ok" (decoded to RGB) or "bad"
(refused with ``BadImageError``, skipped and counted by training).
"""

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG declaring ``width`` x ``height`` RGB, with a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def photo(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    """A smooth colour image (JPEG-friendly) with some structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8), "RGB")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def make_corpus(folder: Path, seed: int = 0) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    img = photo(seed=seed)
    jpeg, png = _save(img, "JPEG", quality=90), _save(img, "PNG")
    grey16 = Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16))
    bright = np.asarray(img.convert("L"), dtype=np.float32)
    nan = bright.copy()
    nan[5:9, 3:7] = np.nan  # float TIFFs (mode F) from scientific cameras; NaN marks no data
    inf = bright.copy()
    inf[0, 0] = np.inf
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    files = {
        "good.jpg": (jpeg, "ok"),
        "truncated_tail.jpg": (jpeg[: len(jpeg) * 2 // 3], "ok"),  # policy: decoded, tail grey, warned
        "truncated_head.jpg": (jpeg[:100], "bad"),  # not even the header: refused
        "truncated.png": (png[: len(png) // 2], "bad"),
        "empty.jpg": (b"", "bad"),
        "random.jpg": (bytes(rng.getrandbits(8) for _ in range(3000)), "bad"),
        "png_named.JPEG": (png, "ok"),  # ILSVRC has one of these
        "cmyk.jpg": (_save(img.convert("CMYK"), "JPEG", quality=95), "ok"),  # ILSVRC has ~22
        "grey.jpg": (_save(img.convert("L"), "JPEG"), "ok"),
        "grey.png": (_save(img.convert("L"), "PNG"), "ok"),
        "palette.png": (_save(img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok"),
        "palette.gif": (_save(img.convert("P"), "GIF"), "ok"),
        "grey16.png": (_save(grey16, "PNG"), "ok"),
        "rgba.png": (_save(rgba, "PNG"), "ok"),
        "float.tif": (_save(Image.fromarray(bright, "F"), "TIFF"), "ok"),
        "float_nan.tif": (_save(Image.fromarray(nan, "F"), "TIFF"), "bad"),  # no value to give a pixel
        "float_inf.tif": (_save(Image.fromarray(inf, "F"), "TIFF"), "bad"),
        "bomb.png": (bomb_png(100_000, 100_000), "bad"),  # 10^10 pixels declared
        "bomb_moderate.png": (bomb_png(12_000, 12_000), "bad"),  # 1.4e8 px: over the 1.2e8 limit
        "icon_named.jpg": (_save(img, "ICO"), "bad"),  # a format we do not mean to read
        "targa_named.png": (_save(img, "TGA"), "bad"),
        "text_named.jpg": (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "bad"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: outcome for name, (_, outcome) in files.items()}
