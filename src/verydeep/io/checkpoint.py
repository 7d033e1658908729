"""Checkpoints: weights as safetensors (with everything needed to use them), state beside them.

``<name>.safetensors`` holds the model's state_dict (torchvision keys) and, in its metadata, the
builder arguments, preprocessing, class names, training scales, colour PCA and the resolved run
config. ``<name>.state.pt`` holds the training state (optimiser, schedule, epoch, RNG) and is
read with ``weights_only=True``. Every write is atomic: temporary file, fsync, rename.

Example:
    >>> import tempfile, os
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.io.checkpoint import Meta, save_model, load_model
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> save_model(path, net, Meta(classes=["a", "b", "c"]))
    >>> load_model(path)[1].classes
    ['a', 'b', 'c']
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..data.preprocess import Preprocess
from ..models.vgg import VGG
from .files import atomic_write, output_target
from .formats import detect_source
from .model_check import check_meta, check_tensors, digest

FORMAT = 1
DIGEST_KEY = "verydeep_sha256"  # of the tensors (model_check.digest); files before it have none


@dataclass
class Meta:
    """What a checkpoint says about how to use its weights."""

    model: dict = field(default_factory=dict)  # VGG builder kwargs
    preprocess: dict = field(default_factory=lambda: Preprocess().to_dict())
    classes: list[str] = field(default_factory=list)
    train_scale: list[int] = field(default_factory=lambda: [256])  # paper units, [S] or [Smin, Smax]
    pca: dict | None = None
    config: dict | None = None  # the resolved RunConfig of the run that made it
    source: str = "verydeep"  # verydeep | torchvision | caffe | keras | ...

    @property
    def prep(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)


def checkpoint_target(path: str | Path) -> Path:
    """``output_target`` for a checkpoint about to be written: it must also be named .safetensors
    (the data is safetensors whatever the name; a .pt name would send readers to torch.load)."""
    target = output_target(path)  # a directory or a device is named as such first
    if Path(path).suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {path}")
    return target


def save_model(path: str | Path, model: VGG, meta: Meta) -> None:
    """Write weights + metadata as one safetensors file (atomically)."""
    meta.model = dict(model.build_kwargs)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"verydeep": json.dumps(asdict(meta) | {"format": FORMAT}), DIGEST_KEY: digest(tensors)}
    atomic_write(path, st_save(tensors, metadata=header))


def check_checkpoint_file(path: str | Path) -> Path:
    """``path`` is a file: a folder or a missing path is a one-line ValueError."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    return path


def read_header(path: Path) -> dict:
    """A safetensors file's JSON header, read alone (the length is checked before it is read:
    a corrupt one must not drive the allocation); a ValueError when it is not one."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > size - 8:
            raise ValueError(f"{path} is not a readable safetensors file (header longer than file)")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{path} is not a readable safetensors file") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable safetensors file")
    return header


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], Meta]:
    """The tensors and ``Meta`` of a verydeep safetensors file, checked (digest, metadata values),
    with one-line errors."""
    path = check_checkpoint_file(path)
    data = path.read_bytes()
    kind = _foreign_kind(data, path)
    if kind:  # not safetensors at all: say what it is and what to run
        raise ValueError(
            f"{path} is a {kind}, not a verydeep checkpoint: "
            f"run `verydeep convert {path} OUT.safetensors` first"
        )
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        raw, stored = header.get("verydeep"), header.get(DIGEST_KEY)
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    if raw is None:
        raise ValueError(f"{path} has no verydeep metadata; import it with `verydeep convert`")
    if stored is not None and stored != digest(tensors):
        raise ValueError(
            f"{path} is damaged: its tensors differ from the SHA-256 stored when it was saved "
            "(a flipped bit or a partial copy); use another copy"
        )
    return tensors, _meta(raw, path)


def read_meta(path: str | Path) -> Meta:
    """The checked ``Meta`` of a verydeep checkpoint, from its header alone (no tensor is read:
    what a run takes from its source before it builds anything). One-line errors as
    ``read_model_file``; the tensors are checked when the weights are loaded."""
    path = check_checkpoint_file(path)
    with path.open("rb") as fh:
        head = fh.read(16)
    kind = _foreign_kind(head, path)
    if kind:
        raise ValueError(
            f"{path} is a {kind}, not a verydeep checkpoint: "
            f"run `verydeep convert {path} OUT.safetensors` first"
        )
    header = read_header(path).get("__metadata__") or {}
    raw = header.get("verydeep") if isinstance(header, dict) else None
    if not isinstance(raw, str):
        raise ValueError(f"{path} has no verydeep metadata; import it with `verydeep convert`")
    return _meta(raw, path)


def check_distinct(paths: list[str | Path]) -> None:
    """Refuse a net named twice (the same path, a link to it, or a copy of its weights): an
    ensemble would weigh it twice and report it as two nets. Reads headers only."""
    seen: dict[object, str | Path] = {}
    for path in paths:
        key = _weights_id(Path(path))
        if key in seen:
            same = (
                f"{path} is given twice"
                if str(seen[key]) == str(path)
                else f"{seen[key]} and {path} hold the same weights"
            )
            raise ValueError(f"{same}: a net given twice would count twice in the ensemble")
        seen[key] = path


def _weights_id(path: Path) -> object:
    """The stored SHA-256 of a file's tensors; without one (older files, unreadable ones) the
    file itself (device, inode), or the path for a missing file (its load names the error)."""
    try:
        stored = (read_header(path).get("__metadata__") or {}).get(DIGEST_KEY)
        if isinstance(stored, str):
            return ("sha256", stored)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(path))


_FOREIGN = {"torchvision": "PyTorch (torch.save) file", "keras": "Keras file", "caffe": "Caffe model"}


def _foreign_kind(data: bytes, path: Path) -> str:
    """What a weights file is when it is not safetensors ('' otherwise), by ``convert``'s own
    signatures (``detect_source``)."""
    if data[8:9] == b"{":  # safetensors: an 8-byte header length, then JSON
        return ""
    try:
        return _FOREIGN.get(detect_source(path), "")
    except ValueError:  # no known signature: the safetensors reader says what is wrong
        return ""


def _meta(raw: str, path: Path) -> Meta:
    """``Meta`` from the header's JSON; anything malformed is a one-line ValueError."""
    try:
        d = json.loads(raw)
        d.pop("format", None)
        meta = Meta(**d)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} has damaged verydeep metadata ({type(e).__name__})") from None
    if not isinstance(meta.model, dict) or not isinstance(meta.classes, list):
        raise ValueError(f"{path} has damaged verydeep metadata (model or classes)")
    check_meta(meta, path)
    return meta


def box_head(meta: Meta) -> str:
    """``scr``/``pcr`` for a localisation net (``localize train``), "" for a classifier."""
    return str(((meta.config or {}).get("localization") or {}).get("head", ""))


def check_classifier(meta: Meta, path: str | Path) -> None:
    """Class scores are read from a classifier only: a box net's 4 or 4C outputs are not class
    probabilities."""
    if box_head(meta):
        raise ValueError(
            f"{path} is a localisation net ({box_head(meta)}: its outputs are boxes, not class "
            "scores); give a classification net here (box nets go to `verydeep localize --loc`)"
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VGG, Meta]:
    """Rebuild the net of a checkpoint and load its weights; returns (model in eval mode, meta).

    The metadata is checked against the tensors before the net is built, and the net is built
    on the ``meta`` device and given the file's tensors, so no memory goes to a random init."""
    tensors, meta = read_model_file(path)
    check_tensors(tensors, meta.model, Path(path))
    with torch.device("meta"):
        model = VGG(**meta.model)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.to(device).eval(), meta


def save_state(path: str | Path, state: dict) -> None:
    """Training state (tensors, numbers, strings, lists, dicts only) written atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
