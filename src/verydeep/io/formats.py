"""Which toolkit wrote a weights file, from its first bytes: the one signature table that
``verydeep convert`` and the checkpoint reader's error messages share (a leaf of ``io``).

Example:
    >>> import os, tempfile
    >>> from verydeep.io.formats import detect_source
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> _ = open(path, "wb").write(b"\\x89HDF\\r\\n\\x1a\\n" + bytes(8))
    >>> detect_source(path)
    'keras'
"""

from __future__ import annotations

import zipfile
from pathlib import Path


def detect_source(path: str | Path) -> str:
    """'caffe', 'torchvision', 'keras' or 'safetensors', from the file's magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip, or a Keras 3 .keras archive
        return "keras" if _zip_has(path, "model.weights.h5") else "torchvision"
    if head[:1] == b"\x80":  # torch.save's legacy pickle format
        return "torchvision"
    if len(head) >= 9 and head[8:9] == b"{":  # 8-byte header length, then JSON
        return "safetensors"
    if path.suffix in (".caffemodel", ".binaryproto", ".pb") or head[:1] in (b"\x0a", b"\x12", b"\xa2"):
        return "caffe"  # NetParameter starts with name (1), layers (2) or layer (100)
    raise ValueError(
        f"{path}: unknown weights format (expected .caffemodel, .pth, .h5, .keras or .safetensors)"
    )


def _zip_has(path: Path, name: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return name in z.namelist()
    except zipfile.BadZipFile:
        return False
