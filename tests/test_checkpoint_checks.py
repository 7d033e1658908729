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
