"""Fuzzing every reader of untrusted bytes: weights (our safetensors, torch.save zips, Keras HDF5),
training state, run manifests and Fashion-MNIST IDX files. Truncated, bit-flipped or extended
files must give a net/array or a ``ValueError`` naming the file: never another exception, a hang
or an allocation driven by a corrupt size field. (The Caffe readers have their own fuzz tests in
test_io_caffe.py.)"""

import contextlib
import gzip
import io
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verydeep.data.fashion_mnist import read_idx
from verydeep.io.checkpoint import Meta, read_model_file, save_model
from verydeep.io.resume import CheckpointSet
from verydeep.io.weights.convert import load_weights
from verydeep.models.vgg import VGG

TINY = dict(num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _net() -> VGG:
    torch.manual_seed(0)
    return VGG("A", **TINY)


def _safetensors() -> bytes:
    buf = Path(__import__("tempfile").mkdtemp()) / "n.safetensors"
    save_model(buf, _net(), Meta(classes=["a", "b", "c"]))
    return buf.read_bytes()


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    torch.save(_net().state_dict(), buf)
    return buf.getvalue()


def _keras_h5() -> bytes:
    """VGG16's layer names and Keras layouts, tiny widths (a legacy whole-model .h5)."""
    h5py = pytest.importorskip("h5py")
    net = VGG("D", **TINY)
    names = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    names += ["fc1", "fc2", "predictions"]
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name, m in zip(names, layers, strict=True):
            w = m.weight.detach()
            kernel = w.permute(2, 3, 1, 0) if w.dim() == 4 else w.T
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g.create_dataset(f"{name}/kernel:0", data=kernel.numpy())
            g.create_dataset(f"{name}/bias:0", data=m.bias.detach().numpy())
    return buf.getvalue()


def _idx() -> bytes:
    arr = torch.randint(0, 256, (5, 4, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.numpy().tobytes()


BASES = {}


def base(kind: str) -> bytes:
    if kind not in BASES:
        BASES[kind] = {"st": _safetensors, "pt": _torch_zip, "h5": _keras_h5, "idx": _idx}[kind]()
    return BASES[kind]


@st.composite
def mutated(draw, kind: str) -> bytes:
    """Cut somewhere, flip a few bytes (biased to the header), append junk."""
    good = base(kind)
    blob = bytearray(good[: draw(st.integers(0, len(good)))])
    for _ in range(draw(st.integers(0, 6))):
        if blob:
            hi = len(blob) - 1 if draw(st.booleans()) else min(len(blob) - 1, 256)
            blob[draw(st.integers(0, hi))] = draw(st.integers(0, 255))
    return bytes(blob + draw(st.binary(max_size=16)))


def _only_value_error(path: Path, read, names_file: bool = True) -> None:
    t = time.perf_counter()
    try:
        read(path)
    except ValueError as e:
        assert "\n" not in str(e).strip(), str(e)
        assert path.name in str(e) or not names_file, str(e)
    assert time.perf_counter() - t < 2


@FUZZ
@given(blob=mutated("st"))
def test_fuzzed_checkpoints(tmp_path, blob):
    path = tmp_path / "ck.safetensors"
    path.write_bytes(blob)
    _only_value_error(path, read_model_file)


@FUZZ
@given(blob=mutated("st"))
def test_fuzzed_checkpoints_through_load_weights(tmp_path, blob):
    path = tmp_path / "ck.safetensors"
    path.write_bytes(blob)
    _only_value_error(path, load_weights, names_file=False)


@FUZZ
@given(blob=mutated("pt"))
def test_fuzzed_torch_zips(tmp_path, blob):
    path = tmp_path / "w.pth"
    path.write_bytes(blob)
    _only_value_error(path, load_weights, names_file=False)


@FUZZ
@given(blob=mutated("h5"))
def test_fuzzed_keras_h5(tmp_path, blob):
    path = tmp_path / "w.h5"
    path.write_bytes(blob)
    _only_value_error(path, load_weights, names_file=False)


@FUZZ
@given(
    blob=mutated("pt"),
    manifest=st.binary(max_size=64) | st.just(b'{"step": 3, "weights": "w", "state": "s"}'),
)
def test_fuzzed_training_state_and_manifest(tmp_path, blob, manifest):
    ck = CheckpointSet(tmp_path)
    (tmp_path / "s").write_bytes(blob)
    (tmp_path / "w").write_bytes(b"")
    (tmp_path / "last.json").write_bytes(manifest)
    t = time.perf_counter()
    with contextlib.suppress(ValueError):
        ck.read()
    assert time.perf_counter() - t < 2


@FUZZ
@given(blob=mutated("idx"), gz=st.booleans())
def test_fuzzed_idx(tmp_path, blob, gz):
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    _only_value_error(path, read_idx)


@FUZZ
@given(
    meta=st.dictionaries(
        st.sampled_from(["model", "classes", "pca", "x", "format"]),
        st.from_type(object) | st.lists(st.integers()),
    )
)
def test_fuzzed_checkpoint_metadata(tmp_path, meta):
    """Well-formed JSON, wrong content: still a one-line ValueError."""
    from safetensors.torch import save

    path = tmp_path / "m.safetensors"
    try:
        raw = __import__("json").dumps(meta)
    except (TypeError, ValueError):
        return
    path.write_bytes(save({"x": torch.zeros(1)}, metadata={"verydeep": raw}))
    _only_value_error(path, read_model_file)


def test_the_unmutated_bases_load():
    """The fuzz starts from files that do load (else it would only test the error path)."""
    tmp = Path(__import__("tempfile").mkdtemp())
    for kind, name in (("st", "a.safetensors"), ("pt", "a.pth"), ("h5", "a.h5")):
        (tmp / name).write_bytes(base(kind))
        assert load_weights(tmp / name)[0].num_classes == 3
    (tmp / "x").write_bytes(base("idx"))
    assert read_idx(tmp / "x").shape == (5, 4, 3)


def test_idx_size_fields_do_not_drive_allocation(tmp_path):
    """A header declaring 2^32 x 2^32 x 2^32 bytes in a gzip of a few bytes."""
    head = bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") * 3
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(head + b"\0" * 100))
    with pytest.raises(ValueError, match=r"bomb\.gz"):
        read_idx(tmp_path / "bomb.gz")
    # a gzip that inflates far beyond what its header declares is not read to its end
    (tmp_path / "long.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + b"\0" * 10**8)
    )
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"long\.gz"):
        read_idx(tmp_path / "long.gz")
    assert time.perf_counter() - t < 1
