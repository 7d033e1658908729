"""Export: onnxruntime is the oracle for the ONNX files, PyTorch's own forward for torch.export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from verydeep.cli import main
from verydeep.io.checkpoint import Meta, save_model
from verydeep.io.weights.export import export_checkpoint, export_program
from verydeep.models.vgg import VGG

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CROP = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=CROP).eval()
    path = tmp_path_factory.mktemp("ckpt") / "net.safetensors"
    meta = Meta(classes=list("abcde"), source="test")
    meta.preprocess = {"mean": (1.0, 2.0, 3.0), "std": (50.0, 60.0, 70.0), "pixel_range": 255.0, "bgr": True}
    save_model(path, net, meta)
    return path, net, meta


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})[0]


def test_dense_onnx_two_sizes(ckpt, tmp_path):
    path, net, _ = ckpt
    out = tmp_path / "dense.onnx"
    export_checkpoint(path, out, "dense")
    for h, w in ((CROP, CROP), (CROP + 64, CROP + 96 + 7)):  # the second one non-square, odd
        x = torch.randn(2, 3, h, w)
        want = net.dense_forward(x).detach()
        got = _run(out, x)
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    model = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    info = json.loads({p.key: p.value for p in model.metadata_props}["verydeep"])
    assert info["classes"] == list("abcde") and info["form"] == "dense" and info["preprocess"]["bgr"]


def test_fc_onnx_with_preprocess(ckpt, tmp_path):
    path, net, meta = ckpt
    out = tmp_path / "fc.onnx"
    export_checkpoint(path, out, "fc", include_preprocess=True)
    pixels = torch.randint(0, 256, (3, 3, CROP, CROP)).float()  # batch 3: dynamic batch
    want = net(meta.prep(pixels)).detach()
    np.testing.assert_allclose(_run(out, pixels), want.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception):  # noqa: B017  (the FC form's spatial size is fixed)
        _run(out, torch.zeros(1, 3, CROP + 32, CROP))


def test_torch_export_programs(ckpt):
    _, net, _ = ckpt
    dense = export_program(net, "dense").module()
    for h, w in ((CROP, CROP), (CROP + 32, CROP + 128)):
        x = torch.randn(1, 3, h, w)
        torch.testing.assert_close(dense(x), net.dense_forward(x), rtol=1e-5, atol=1e-5)
    fc = export_program(net, "fc").module()
    x = torch.randn(4, 3, CROP, CROP)
    torch.testing.assert_close(fc(x), net(x), rtol=1e-5, atol=1e-5)


def test_cli_export(ckpt, tmp_path, capsys):
    path, _, _ = ckpt
    out = tmp_path / "cli.onnx"
    assert main(["export", str(path), str(out), "--form", "dense", "--check"]) == 0
    assert "max |onnxruntime - torch|" in capsys.readouterr().out and out.is_file()
    assert main(["export", str(path), str(tmp_path / "x.bin")]) == 2
    assert main(["export", str(tmp_path / "missing.safetensors"), str(out)]) == 2


def test_a_lrn_dense_onnx_matches_torchs_lrn(tmp_path):
    torch.manual_seed(0)
    net = VGG("A-LRN", num_classes=5, width_mult=0.125, fc_width=32, crop_size=CROP).eval()
    path = tmp_path / "a-lrn.safetensors"
    save_model(path, net, Meta(classes=list("abcde"), source="test"))
    export_checkpoint(path, tmp_path / "a-lrn.onnx", "dense")
    lrn = net.features[2]  # the oracle: the same net with torch's own LocalResponseNorm
    net.features[2] = torch.nn.LocalResponseNorm(lrn.size, lrn.alpha, lrn.beta, lrn.k)
    x = torch.randn(2, 3, CROP + 32, CROP + 7) * 50
    want = net.dense_forward(x).detach().numpy()
    np.testing.assert_allclose(_run(tmp_path / "a-lrn.onnx", x), want, rtol=1e-4, atol=1e-4)


def test_a_localisation_net_exports_boxes_and_is_no_classifier(tmp_path, capsys):
    # its 4 outputs were exported as "scores", and predict printed them as class probabilities
    from verydeep.localization.net import make_loc_net

    torch.manual_seed(0)
    loc = make_loc_net(VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32), "scr").eval()
    path = tmp_path / "loc.safetensors"
    save_model(path, loc, Meta(classes=["a", "b"], config={"localization": {"head": "scr"}}))
    export_checkpoint(path, tmp_path / "loc.onnx", "dense")
    graph = onnx.load(str(tmp_path / "loc.onnx")).graph
    assert [o.name for o in graph.output] == ["boxes"]
    x = torch.randn(1, 3, 64, 96)
    np.testing.assert_allclose(
        _run(tmp_path / "loc.onnx", x), loc.dense_forward(x).detach().numpy(), atol=1e-4
    )
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (48, 40)).save(photo)
    for argv in (["predict", "-m", str(path), str(photo)], ["eval", str(path), "--data", str(tmp_path)]):
        assert main(argv) == 2
        line = capsys.readouterr().err.strip()
        assert line.endswith(
            "is a localisation net (scr: its outputs are boxes, not class scores); give a classification "
            "net here (box nets go to `verydeep localize --loc`)"
        ), line


def test_check_runs_onnxruntime_on_the_written_file(ckpt, tmp_path, monkeypatch):
    """``--check`` reads the file back with onnxruntime: a file from other weights is caught."""
    from verydeep.io.weights import export as export_mod
    from verydeep.io.weights.export import check_onnx

    path, net, _ = ckpt
    out = tmp_path / "net.onnx"
    export_checkpoint(path, out, "dense")
    assert check_onnx(net, out, [CROP, CROP + 64]) < 1e-4
    torch.manual_seed(1)
    other = VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=CROP).eval()
    assert check_onnx(other, out, [CROP, CROP + 64]) > 1e-2  # not torch against itself
    real = export_mod.export_onnx
    # an exporter bug: the file holds other weights than the checkpoint's
    monkeypatch.setattr(export_mod, "export_onnx", lambda model, out, *a: real(other, out, *a))
    with pytest.raises(ValueError, match="onnxruntime differs from PyTorch by"):
        export_checkpoint(path, tmp_path / "bad.onnx", "dense", check=True)
