"""Checkpoints that lie (issue 17, items 10 and 14): metadata that disagrees with the tensors or
with itself, NaN weights and flipped bits are refused with one line naming the file, before any
net is built; files saved before the digest existed still load."""

import json
import subprocess
import sys
import tracemalloc

import pytest
import torch
from safetensors.torch import load_file, save_file

from verydeep.io.checkpoint import DIGEST_KEY, Meta, load_model, save_model
from verydeep.models.vgg import VGG

TINY = dict(num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "net.safetensors"
    save_model(path, VGG("A", **TINY), Meta(classes=["a", "b", "c"]))
    return path


def _header(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _rewrite(path, *, meta=None, tensors=None, keep_digest=True):
    """The same file with its verydeep metadata edited by ``meta`` or its tensors replaced."""
    header, sd = _header(path), load_file(str(path))
    d = json.loads(header["verydeep"])
    if meta:
        meta(d)
    header["verydeep"] = json.dumps(d)
    if not keep_digest:
        header.pop(DIGEST_KEY)
    save_file(tensors if tensors is not None else sd, str(path), metadata=header)


LIES = {
    "unknown key": (lambda d: d["model"].update(bogus=1), "unknown model key 'bogus'"),
    "string width": (lambda d: d["model"].update(width_mult="0.125"), "model.width_mult"),
    "negative classes": (lambda d: d["model"].update(num_classes=-3), "model.num_classes"),
    "bool classes": (lambda d: d["model"].update(num_classes=True), "model.num_classes"),
    "unknown arch": (lambda d: d["model"].update(arch="Z"), "unknown VGG config"),
    "crop vs tensors": (lambda d: d["model"].update(crop_size=64), "do not fit"),
    "channels vs tensors": (lambda d: d["model"].update(in_channels=1), "channels"),
    "fc8 vs tensors": (
        lambda d: (d["model"].update(num_classes=4), d.update(classes=list("abcd"))),
        "do not fit",
    ),
    "no mean": (lambda d: d["preprocess"].pop("mean"), "preprocess"),
    "zero std": (lambda d: d["preprocess"].update(std=[0, 1, 1]), "std"),
    "names vs classes": (lambda d: d.update(classes=["a"]), "1 class names for 3 classes"),
    "bad pca": (lambda d: d.update(pca={"eigval": 3}), "pca"),
    "huge net": (lambda d: d["model"].update(arch="E", width_mult=8), "do not fit"),
    # every field within the config's declared ranges (issue 42, item 2)
    "scale 0": (lambda d: d.update(train_scale=[0]), r"train_scale must be in \[224, 4,096\], got 0"),
    "scale huge": (lambda d: d.update(train_scale=[256, 10**6]), "train_scale must be in"),
    "scales reversed": (lambda d: d.update(train_scale=[512, 256]), "Smin <= Smax"),
    "three scales": (lambda d: d.update(train_scale=[256, 384, 512]), r"\[S\] or \[Smin, Smax\]"),
    "bool scale": (lambda d: d.update(train_scale=[True]), "train_scale"),
    "classes twice": (lambda d: d.update(classes=["a", "b", "a"]), "class 'a' is named twice"),
    "empty class": (lambda d: d.update(classes=["a", "", "c"]), "non-empty strings"),
    "nan mean": (lambda d: d["preprocess"].update(mean=[float("nan"), 1, 1]), "not a finite number"),
    "negative std": (lambda d: d["preprocess"].update(std=[1, -2, 1]), "positive std"),
    "zero pixel range": (lambda d: d["preprocess"].update(pixel_range=0), "pixel_range"),
    "inf pca": (lambda d: d.update(pca={"eigval": [1, 1, float("inf")], "eigvec": [[1, 0, 0]] * 3}), "pca"),
    "dropout 1": (lambda d: d["model"].update(dropout=1.0), r"model.dropout must be in \[0, 1\)"),
    "zero width": (lambda d: d["model"].update(width_mult=0.0), "model.width_mult must be in"),
    "zero classes": (lambda d: d["model"].update(num_classes=0), "model.num_classes must be at least 1"),
    "source number": (lambda d: d.update(source=3), "source must be a string"),
}


@pytest.mark.parametrize("case", list(LIES))
def test_lying_metadata_is_refused_before_building(ckpt, case):
    edit, message = LIES[case]
    _rewrite(ckpt, meta=edit)
    tracemalloc.start()
    with pytest.raises(ValueError, match=message) as err:
        load_model(ckpt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
    assert peak < 50e6  # E at 8x width would be ~17 GB of parameters if built for real


def test_nan_weights_are_refused(ckpt):
    sd = load_file(str(ckpt))
    sd["classifier.6.bias"][1] = float("nan")
    _rewrite(ckpt, tensors=sd, keep_digest=False)
    with pytest.raises(ValueError, match=r"classifier\.6\.bias holds NaN"):
        load_model(ckpt)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_tensors_are_refused_in_one_line(ckpt, dtype):
    """Issue 42, item 1: the shapes fit, but a weight must be floating point (it was a traceback
    from load_state_dict: 'Only Tensors of floating point ... can require gradients')."""
    sd = {k: v.to(dtype) for k, v in load_file(str(ckpt)).items()}
    _rewrite(ckpt, tensors=sd, keep_digest=False)
    with pytest.raises(ValueError, match=rf"holds {dtype} values; the net's are floating point") as err:
        load_model(ckpt)
    assert str(ckpt) in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_load_as_float32(ckpt, dtype):
    want = load_file(str(ckpt))
    _rewrite(ckpt, tensors={k: v.to(dtype) for k, v in want.items()}, keep_digest=False)
    model, _ = load_model(ckpt)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, want[k].to(dtype).float())


def test_batch_norms_integer_counter_is_no_damage(tmp_path):
    path = tmp_path / "bn.safetensors"
    save_model(path, VGG("A_bn", **TINY), Meta(classes=["a", "b", "c"]))
    assert load_file(str(path))["features.1.num_batches_tracked"].dtype == torch.int64
    load_model(path)
    sd = load_file(str(path))
    sd["features.1.num_batches_tracked"] = sd["features.1.num_batches_tracked"].float()
    _rewrite(path, tensors=sd, keep_digest=False)
    with pytest.raises(
        ValueError, match=r"num_batches_tracked holds torch\.float32 values; the net's are integer"
    ):
        load_model(path)


def test_a_flipped_bit_in_tensor_data_is_caught(ckpt):
    data = bytearray(ckpt.read_bytes())
    data[-7] ^= 0x01  # the last bytes are tensor data; a tiny change of one weight
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged: its tensors differ from the SHA-256"):
        load_model(ckpt)


def test_files_without_a_digest_still_load(ckpt):
    want = load_file(str(ckpt))
    _rewrite(ckpt, keep_digest=False)
    model, meta = load_model(ckpt)
    assert meta.classes == ["a", "b", "c"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())


def test_cli_gives_one_line_for_a_lying_checkpoint(ckpt, tmp_path):
    _rewrite(ckpt, meta=LIES["string width"][0])
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(img)
    r = subprocess.run(
        [sys.executable, "-m", "verydeep", "predict", "-m", str(ckpt), str(img)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "model.width_mult" in r.stderr
