"""Fashion-MNIST straight from its IDX gz files (Debian package ``dataset-fashion-mnist``).

Nothing is ever downloaded: the files come from ``apt-get install dataset-fashion-mnist``, which
puts them under ``/usr/share/datasets/fashion-mnist/``.

Example:
    >>> from verydeep.data.fashion_mnist import load_fashion_mnist, DEFAULT_ROOT
    >>> import os
    >>> if os.path.isdir(DEFAULT_ROOT):
    ...     images, labels = load_fashion_mnist(DEFAULT_ROOT, "test")
    ...     print(images.shape, images.dtype, int(labels.max()))
    ... else:
    ...     print("torch.Size([10000, 1, 28, 28]) torch.uint8 9")
    torch.Size([10000, 1, 28, 28]) torch.uint8 9
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MISSING = "Fashion-MNIST not found in {root}; install it with: sudo apt-get install dataset-fashion-mnist"


MAX_IDX_BYTES = 1 << 31  # Fashion-MNIST's largest file holds 47 MB; a header asking more is corrupt


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian dims, uint8 data.

    The header is checked before the data is read, and no more than it declares (+1 byte, to
    notice extra data) is ever inflated: a corrupt size or a gzip bomb cannot exhaust memory.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08":
                raise ValueError(f"{path}: not an unsigned-byte IDX file")
            raw_dims = fh.read(4 * head[3])
            dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
            size = math.prod(dims)
            if len(raw_dims) < 4 * head[3] or size > MAX_IDX_BYTES:
                raise ValueError(f"{path}: header says {dims[:4]}, not a plausible IDX file")
            data = fh.read(size + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a readable IDX file ({type(e).__name__})") from None
    if len(data) != size:
        raise ValueError(f"{path}: header says {dims}, file holds {len(data)} bytes or more")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def load_fashion_mnist(
    root: str | Path = DEFAULT_ROOT, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 N x 1 x 28 x 28, labels int64 N) of ``split`` (train: 60k, test: 10k)."""
    root = Path(root)
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split must be train or test, got {split!r}")
    img_file, lbl_file = (root / f for f in FILES[split])
    if not img_file.is_file() or not lbl_file.is_file():
        raise FileNotFoundError(MISSING.format(root=root))
    images = torch.from_numpy(read_idx(img_file).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(lbl_file).astype(np.int64))
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels in {split}")
    return images, labels
