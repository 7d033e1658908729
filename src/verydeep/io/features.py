"""Descriptor files: arrays plus the image paths, labels and how they were made.

``.safetensors``: tensors ``features`` (N, D) float32 and ``labels``; paths, classes, task and
provenance as JSON in the metadata. ``.npz``: the same as arrays (strings as unicode arrays, so
``allow_pickle`` stays off). Labels are int64 (N,) for multi-class data and int8 (N, C) in VOC's
{1, 0 (difficult only), -1} for multi-label data. Writes are atomic.

Example:
    >>> import numpy as np, tempfile, os
    >>> from verydeep.io.features import Descriptors, save_descriptors, load_descriptors
    >>> d = Descriptors(np.eye(2, dtype=np.float32), np.array([0, 1]), ["a.jpg", "b.jpg"], ["ant", "bee"])
    >>> for ext in ("safetensors", "npz"):
    ...     path = os.path.join(tempfile.mkdtemp(), "d." + ext)
    ...     save_descriptors(path, d)
    ...     e = load_descriptors(path)
    ...     print(e.task, e.paths, e.features.shape)
    multiclass ['a.jpg', 'b.jpg'] (2, 2)
    multiclass ['a.jpg', 'b.jpg'] (2, 2)
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .files import atomic_write


@dataclass
class Descriptors:
    """Image descriptors with their labels; ``task`` follows from the labels' shape."""

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: list[str]
    info: dict = field(default_factory=dict)  # descriptor config, checkpoint, CPU time...

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels)
        self.paths = [str(p) for p in self.paths]
        n = len(self.features)
        if self.features.ndim != 2 or len(self.labels) != n or len(self.paths) != n:
            raise ValueError(
                f"descriptors {self.features.shape}, labels {self.labels.shape} and {len(self.paths)} "
                "paths do not match"
            )
        if self.labels.ndim == 2 and self.labels.shape[1] != len(self.classes):
            raise ValueError(f"{self.labels.shape[1]} label columns but {len(self.classes)} classes")
        if n == 0:
            raise ValueError("no descriptors (0 images)")
        if self.labels.ndim == 1 and not (self.labels.min() >= 0 and self.labels.max() < len(self.classes)):
            raise ValueError(f"labels outside [0, {len(self.classes)}): the file's classes do not cover them")
        if not np.isfinite(self.features).all():
            raise ValueError("descriptors hold NaN or inf")

    @property
    def task(self) -> str:
        return "multilabel" if self.labels.ndim == 2 else "multiclass"


def save_descriptors(path: str | Path, d: Descriptors) -> None:
    """Write ``d`` as safetensors or npz, by the file's suffix."""
    path = Path(path)
    meta = {"paths": d.paths, "classes": list(d.classes), "task": d.task, "info": d.info}
    labels = d.labels.astype(np.int8 if d.task == "multilabel" else np.int64)
    if path.suffix == ".safetensors":
        blob = st_save({"features": d.features, "labels": labels}, metadata={"verydeep": json.dumps(meta)})
    elif path.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(
            buf,
            features=d.features,
            labels=labels,
            paths=np.array(d.paths, dtype=str),
            classes=np.array(list(d.classes), dtype=str),
            info=np.array(json.dumps(d.info)),
        )
        blob = buf.getvalue()
    else:
        check_descriptor_path(path)
    atomic_write(path, blob)


def check_descriptor_path(path: str | Path) -> None:
    """Descriptor files are .safetensors or .npz (checked before any image is read, too)."""
    if Path(path).suffix not in (".safetensors", ".npz"):
        raise ValueError(f"descriptor file must end in .safetensors or .npz, got {Path(path).name}")


def load_descriptors(path: str | Path) -> Descriptors:
    """Read a file written by ``save_descriptors``; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"descriptor file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return Descriptors(
                    z["features"],
                    z["labels"],
                    list(z["paths"]),
                    list(z["classes"]),
                    json.loads(str(z["info"])),
                )
        data = path.read_bytes()
        arrays = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_len])["__metadata__"]["verydeep"]
        meta = json.loads(raw)
        return Descriptors(arrays["features"], arrays["labels"], meta["paths"], meta["classes"], meta["info"])
    except (SafetensorError, KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a verydeep descriptor file ({type(e).__name__}: {e})") from None
