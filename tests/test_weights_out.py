"""Weights out (``verydeep export CKPT OUT.pth|.h5|.caffemodel``), read back by the toolkits
themselves: torchvision's VGG, Keras' ``keras.applications.VGG16`` (torch backend) and an
independent protobuf encoding of caffe.proto (``test_io_caffe``); and by ``verydeep convert``.

The checkpoints are normalised with the target's mean pixel (in another channel order, range or
std), so folding the convention into conv1 is exact and the scores must agree to rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from test_io_caffe import _messages

from verydeep.cli import main
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import Meta, load_model, save_model
from verydeep.io.weights.weights_out import fold_convention
from verydeep.models.vgg import VGG

# the ImageNet mean pixel (RGB, 0-255), as the torchvision and Caffe presets hold it
RGB_MEAN = (123.68, 116.779, 103.939)


def _net(arch: str = "A", **kw) -> VGG:
    torch.manual_seed(0)
    net = VGG(arch, 4, **({"width_mult": 0.125, "fc_width": 16, "crop_size": 32} | kw)).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.05)  # non-zero biases: a lost or misplaced one shows
    return net


def _save(path, net: VGG, prep: Preprocess) -> str:
    save_model(path, net, Meta(preprocess=prep.to_dict(), classes=list("abcd")))
    return str(path)


def _pixels(n: int, size: int) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )


@pytest.mark.parametrize(
    ("suffix", "preset"), [(".pth", "torchvision"), (".h5", "caffe"), (".caffemodel", "caffe")]
)
def test_written_weights_convert_back_to_the_same_scores(tmp_path, capsys, suffix, preset):
    net, prep = _net(), Preprocess(RGB_MEAN)  # RGB 0-255 minus the ImageNet mean
    ckpt = _save(tmp_path / "net.safetensors", net, prep)
    out = tmp_path / f"net{suffix}"
    assert main(["export", ckpt, str(out)]) == 0
    assert f"input {Preprocess.preset(preset).describe()}" in capsys.readouterr().out
    assert main(["convert", str(out), str(tmp_path / "back.safetensors")]) == 0
    back, meta = load_model(tmp_path / "back.safetensors")
    assert meta.prep == Preprocess.preset(preset)
    x = _pixels(3, 32)
    torch.testing.assert_close(back(meta.prep(x)), net(prep(x)), rtol=1e-4, atol=1e-4)


def test_a_mean_change_is_exact_but_for_the_padded_border():
    """Another mean moves into conv1's bias: identical scores where no window reaches the zero
    padding, i.e. in the dense map's inner positions; different ones at the border."""
    net = _net(crop_size=64)
    src, dst = Preprocess((100.0, 120.0, 140.0)), Preprocess.preset("torchvision")
    folded = fold_convention(net, src, dst)
    x = _pixels(1, 64)
    a, b = net.features[0](src(x)), folded.features[0](dst(x))
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert (a[..., 0, :] - b[..., 0, :]).abs().max() > 1e-2


def test_the_caffemodel_parses_as_caffe_proto(tmp_path):
    net = _net("A-LRN")
    ckpt = _save(tmp_path / "net.safetensors", net, Preprocess(RGB_MEAN))
    assert main(["export", ckpt, str(tmp_path / "net.caffemodel")]) == 0
    parsed = _messages()["NetParameter"].FromString((tmp_path / "net.caffemodel").read_bytes())
    layers = [(layer.name, layer.type, [tuple(b.shape.dim) for b in layer.blobs]) for layer in parsed.layer]
    assert layers[:2] == [("conv1_1", "Convolution", [(8, 3, 3, 3), (8,)]), ("norm1", "LRN", [])]
    assert layers[-1] == ("fc8", "InnerProduct", [(4, 16), (4,)])
    conv = parsed.layer[0].blobs[0]
    want = net.features[0].weight.flip(1)  # BGR: conv1's input channels reversed
    np.testing.assert_allclose(np.array(conv.data).reshape(8, 3, 3, 3), want.detach().numpy(), rtol=1e-6)


def test_batch_norm_nets_and_unknown_formats_are_one_line(tmp_path, capsys):
    ckpt = _save(tmp_path / "bn.safetensors", _net("A_bn"), Preprocess(RGB_MEAN))
    assert main(["export", ckpt, str(tmp_path / "bn.h5")]) == 2
    assert "batch-norm nets have no Caffe or Keras VGG layout" in capsys.readouterr().err
    assert main(["export", ckpt, str(tmp_path / "bn.bin")]) == 2
    assert "write .pth or .pt (torchvision), .h5 (Keras), .caffemodel or .onnx" in capsys.readouterr().err
    assert not (tmp_path / "bn.h5").exists() and not (tmp_path / "bn.bin").exists()
    assert main(["export", ckpt, str(tmp_path / "bn.pth"), "--check"]) == 2
    assert main(["export", ckpt, str(tmp_path / "bn.pth")]) == 0  # torchvision has vgg11_bn


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras_loads_the_h5_and_scores_as_we_do(tmp_path):
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported (as test_io_keras does)
    keras = pytest.importorskip("keras")
    net = _net("D", width_mult=1.0, fc_width=4096, crop_size=64)
    ckpt = _save(tmp_path / "net.safetensors", net, Preprocess(RGB_MEAN))
    assert main(["export", ckpt, str(tmp_path / "net.h5")]) == 0
    model = keras.applications.VGG16(
        weights=None, input_shape=(64, 64, 3), classes=4, classifier_activation=None
    )
    model.load_weights(str(tmp_path / "net.h5"))
    x = _pixels(2, 64)
    images = x.permute(0, 2, 3, 1).numpy().astype("float32")
    got = keras.ops.convert_to_numpy(model(keras.applications.vgg16.preprocess_input(images), training=False))
    with torch.no_grad():
        want = net(Preprocess(RGB_MEAN)(x))
    torch.testing.assert_close(
        torch.from_numpy(np.asarray(got)), want, rtol=1e-4, atol=1e-4 * float(want.abs().max())
    )


@pytest.mark.slow
def test_torchvision_loads_the_pth_and_scores_as_we_do(tmp_path):
    net = _net("A", width_mult=1.0, fc_width=4096, crop_size=224)
    ckpt = _save(tmp_path / "net.safetensors", net, Preprocess(RGB_MEAN))
    assert main(["export", ckpt, str(tmp_path / "net.pth")]) == 0
    tv = tvm.vgg11(num_classes=4).eval()
    tv.load_state_dict(torch.load(tmp_path / "net.pth", weights_only=True))
    x = _pixels(1, 224)
    with torch.no_grad():
        got, want = tv(Preprocess.preset("torchvision")(x)), net(Preprocess(RGB_MEAN)(x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
