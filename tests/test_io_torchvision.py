"""torchvision and safetensors import: torchvision's own VGG models are the oracle.

A torchvision state_dict saved with ``torch.save`` goes through ``convert`` and ``load_model``;
the logits at 224x224 must be identical (same tensors, same operations: torchvision's adaptive
average pool is the identity on a 7x7 map).
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from verydeep.cli import main
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import Meta, load_model, save_model
from verydeep.io.weights.convert import convert, detect_source, load_weights
from verydeep.models.vgg import VGG


def _tv(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = getattr(tvm, name)(weights=None).eval()
    if name.endswith("_bn"):  # non-trivial running statistics, so BN buffers are checked too
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("vgg16", "D"),
        pytest.param("vgg11", "A", marks=pytest.mark.slow),
        pytest.param("vgg13_bn", "B_bn", marks=pytest.mark.slow),
        pytest.param("vgg19", "E", marks=pytest.mark.slow),
    ],
)
def test_torchvision_round_trip_identical_logits(tmp_path, name, arch):
    tv = _tv(name, seed=0)
    torch.save(tv.state_dict(), tmp_path / f"{name}.pth")
    meta = convert(tmp_path / f"{name}.pth", tmp_path / f"{name}.safetensors")
    ours, meta = load_model(tmp_path / f"{name}.safetensors")
    ours.eval()
    assert ours.arch == arch and ours.num_classes == 1000 and ours.crop_size == 224
    assert meta.source == "torchvision" and meta.prep == Preprocess.preset("torchvision")
    assert meta.classes[:2] == ["tench", "goldfish"] and len(meta.classes) == 1000  # ImageNet names
    img = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    x = meta.prep(img)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


def test_batch_norm_state_dict(tmp_path):
    """Small stand-in for vgg*_bn (same keys by construction, see test_models)."""
    torch.manual_seed(2)
    net = VGG("D_bn", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    torch.save(net.state_dict(), tmp_path / "bn.pth")
    model, _ = load_weights(tmp_path / "bn.pth")
    assert model.arch == "D_bn"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)


def test_wrapped_and_dataparallel_state_dicts(tmp_path):
    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    model, meta = load_weights(tmp_path / "w.pth", preprocess="paper")
    assert model.arch == "A" and meta.prep == Preprocess.preset("paper")
    for a, b in zip(net.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_safetensors_inputs(tmp_path):
    net = VGG("B", num_classes=4, width_mult=0.125, fc_width=16, crop_size=64)
    # our own checkpoint: metadata kept, overridable
    save_model(tmp_path / "ours.safetensors", net, Meta(classes=list("abcd"), source="verydeep"))
    assert detect_source(tmp_path / "ours.safetensors") == "safetensors"
    meta = convert(tmp_path / "ours.safetensors", tmp_path / "copy.safetensors", preprocess="torchvision")
    assert meta.classes == list("abcd") and meta.source == "verydeep"
    assert load_model(tmp_path / "copy.safetensors")[1].prep == Preprocess.preset("torchvision")
    # --arch cannot change what the metadata records (it was ignored, even "E" or "bogus")
    for arch in ("E", "B"):
        with pytest.raises(ValueError, match=r"--arch has no effect: .* is a verydeep checkpoint"):
            convert(tmp_path / "ours.safetensors", tmp_path / "again.safetensors", arch=arch)
    assert not (tmp_path / "again.safetensors").exists()
    # a bare torchvision-keyed safetensors file (as hubs publish them)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "bare.safetensors")
    model, meta = load_weights(tmp_path / "bare.safetensors")
    assert model.arch == "B" and meta.classes == ["class_0", "class_1", "class_2", "class_3"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malformed_and_unsafe_rejected(tmp_path, capsys):
    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    torch.save(net.state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a loadable state_dict"):
        load_weights(tmp_path / "cut.pth")
    # a record whose central-directory entry claims 2 GB in a file of a few hundred KB
    cd = data.index(b"PK\x01\x02")
    big = data[: cd + 24] + (0x7FFFFFFF).to_bytes(4, "little") + data[cd + 28 :]
    (tmp_path / "big.pth").write_bytes(big)
    with pytest.raises(ValueError, match="declares more bytes"):
        load_weights(tmp_path / "big.pth")
    # weights_only=True: arbitrary pickled objects are refused, never executed
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"features.0.weight": Evil()}, protocol=2))
    with pytest.raises(ValueError):
        load_weights(tmp_path / "evil.pth")
    assert "pwned" not in capsys.readouterr().out
    torch.save({"a": 1}, tmp_path / "notsd.pth")
    with pytest.raises(ValueError, match="dict of tensors"):
        load_weights(tmp_path / "notsd.pth")
    sd = net.state_dict()
    del sd["classifier.6.bias"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="fit no VGG"):
        load_weights(tmp_path / "missing.pth")
    # safetensors whose header length points past the end of the file
    (tmp_path / "bad.safetensors").write_bytes((10**9).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="--rgb"):
        load_weights(tmp_path / "good.pth", rgb=True)
    assert main(["convert", str(tmp_path / "cut.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert main(["convert", str(tmp_path / "good.pth"), str(tmp_path / "o.pt")]) == 2


def test_a_refused_pickle_is_one_line_that_never_advises_unsafe_loading(tmp_path):
    """torch.load's own message starts by suggesting weights_only=False, which would run the
    file's code; a whole pickled model should be told to save its state_dict instead."""
    import warnings

    torch.save(tvm.vgg11(num_classes=3), tmp_path / "model.pth")
    (tmp_path / "odd.pth").write_bytes(b"\x80\x48 not a pickle at all")  # protocol 72: torch warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ValueError, match=r"pickles a torchvision\.models\.vgg\.VGG.*state_dict\(\)") as e:
            load_weights(tmp_path / "model.pth")
        with pytest.raises(ValueError, match="refused by the safe unpickler: Unsupported operand") as e2:
            load_weights(tmp_path / "odd.pth")
    for err in (e, e2):
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_class_name_files_must_name_each_class_once_in_utf8(tmp_path):
    from verydeep.io.weights.convert import read_classes

    (tmp_path / "ok.txt").write_text("ant\n\nbee\n")
    assert read_classes(tmp_path / "ok.txt", 2) == ["ant", "bee"]
    (tmp_path / "dup.txt").write_text("ant\nant\n")  # was accepted: two outputs named alike
    with pytest.raises(ValueError, match="names 'ant' more than once"):
        read_classes(tmp_path / "dup.txt", 2)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xd8\xff\n\x00")  # a JPEG given by mistake: codec error text
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_classes(tmp_path / "bin.txt", 2)


def test_a_flipped_byte_in_a_zip_pth_fails_its_crc(tmp_path, capsys):
    """Issue 42, item 3: torch's zip reader ignores the CRC-32 every record carries, so one
    flipped byte in a weight converted silently (zipfile.testzip is the oracle here)."""
    import zipfile

    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    torch.save(net.state_dict(), tmp_path / "good.pth")
    data = bytearray((tmp_path / "good.pth").read_bytes())
    with zipfile.ZipFile(tmp_path / "good.pth") as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    local = info.header_offset  # the local header's own name and extra lengths (not the directory's)
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    data[start + info.file_size // 2] ^= 0x10  # one byte inside that tensor's bytes
    (tmp_path / "flip.pth").write_bytes(bytes(data))
    with zipfile.ZipFile(tmp_path / "flip.pth") as z:
        assert z.testzip() == info.filename  # the file is damaged as described
    torch.load(tmp_path / "flip.pth", weights_only=True)  # and torch alone loads it without a word
    with pytest.raises(ValueError, match=rf"record {info.filename} fails its CRC-32 check"):
        load_weights(tmp_path / "flip.pth")
    out = tmp_path / "o.safetensors"
    assert main(["convert", str(tmp_path / "flip.pth"), str(out)]) == 2 and not out.exists()
    assert "CRC-32" in capsys.readouterr().err
