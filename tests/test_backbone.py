"""``Backbone``/``to_net_input``: the caller's value range becomes the checkpoint's convention, so
one image gives one set of features whichever toolkit's file the same weights came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verydeep.backbone import Backbone, to_net_input
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import Meta, save_model
from verydeep.io.weights.convert import convert
from verydeep.io.weights.weights_out import write_weights
from verydeep.models.vgg import VGG

LAYERS = ["relu1_2", "relu3_3", "pool5"]


@pytest.mark.parametrize("value_range", ["0,1", "-1,1", "0,255"])
def test_caffe_input_is_numpys(value_range):
    lo, hi = {"0,1": (0, 1), "-1,1": (-1, 1), "0,255": (0, 255)}[value_range]
    x = torch.rand(2, 3, 5, 4) * (hi - lo) + lo
    caffe = Preprocess.preset("caffe")  # BGR 0-255 minus the mean pixel (in BGR order)
    pixels = (x.numpy() - lo) / (hi - lo) * 255.0
    want = pixels[:, ::-1] - np.array(caffe.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(to_net_input(x, caffe, value_range).numpy(), want, rtol=1e-5, atol=1e-3)


def test_one_image_gives_one_set_of_features_from_a_pth_and_a_caffemodel(tmp_path):
    torch.manual_seed(0)
    net = VGG("D", num_classes=4, width_mult=0.125, fc_width=32, crop_size=32).eval()
    source = tmp_path / "source.safetensors"
    save_model(source, net, Meta(preprocess=Preprocess((120.0, 115.0, 100.0), (60.0, 60.0, 60.0)).to_dict()))
    feats = {}
    x = torch.rand(2, 3, 48, 40) * 2 - 1  # a generator's RGB output in [-1, 1]
    for fmt in (".pth", ".caffemodel"):
        written = tmp_path / f"w{fmt}"
        write_weights(source, written)  # torchvision's convention, or Caffe's BGR 0-255
        convert(written, tmp_path / f"w{fmt}.safetensors")
        backbone = Backbone.from_checkpoint(tmp_path / f"w{fmt}.safetensors", LAYERS, value_range="-1,1")
        with torch.no_grad():
            feats[fmt] = backbone(x)
    own = Backbone(net, Preprocess((120.0, 115.0, 100.0), (60.0, 60.0, 60.0)), LAYERS, value_range="-1,1")
    with torch.no_grad():
        wrong_range = Backbone(net, own.prep, LAYERS, value_range="0,1")(x)
        own_feats = own(x)
    for name in LAYERS:
        scale = own_feats[name].abs().max()
        diff = (feats[".pth"][name] - feats[".caffemodel"][name]).abs().max()
        assert diff < 5e-3 * scale, name  # torchvision's mean and Caffe's differ by < 0.5 grey levels
    for name in LAYERS[:2]:  # the range matters (a random net's pool5 barely moves)
        assert (wrong_range[name] - own_feats[name]).abs().max() > 0.05 * own_feats[name].abs().max()
    # away from conv1's zero padding (where a folded mean is not exact) each equals the source
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    for fmt in feats:
        torch.testing.assert_close(
            feats[fmt]["relu1_2"][inner], own_feats["relu1_2"][inner], rtol=1e-4, atol=1e-4
        )


def test_a_bad_range_or_layer_is_one_line():
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=8, crop_size=32)
    with pytest.raises(ValueError, match="value_range must be one of 0,1, -1,1, 0,255"):
        Backbone(net, Preprocess(), ["relu1_1"], value_range="[0, 1]")
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['relu1_2'\]"):
        Backbone(net, Preprocess(), ["relu1_2"])


def _wide_enough() -> VGG:
    """Half width: stages 3-5 have the 64+ inputs and 128+ outputs the fused Winograd takes."""
    torch.manual_seed(0)
    return VGG("D", num_classes=3, width_mult=0.5, fc_width=16, crop_size=32).eval()


@pytest.mark.parametrize("layers", [["relu4_3"], ["conv3_2", "relu4_1"]])
def test_winograd_gives_direct_convolutions_features_and_input_gradient(layers):
    net, prep = _wide_enough(), Preprocess((120.0, 115.0, 100.0), (60.0, 60.0, 60.0))
    x = torch.rand(2, 3, 32, 40)
    out = {}
    for mode in ("false", "true"):
        xi = x.clone().requires_grad_()
        vgg = Backbone(net, prep, layers, winograd=mode)
        feats = vgg(xi)
        sum(v.pow(2).sum() for v in feats.values()).backward()
        out[mode] = feats, xi.grad
        assert (vgg._fast[1] is not None) == (mode == "true")  # the copy that ran, or none
    for name in layers:
        torch.testing.assert_close(out["true"][0][name], out["false"][0][name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["true"][1], out["false"][1], rtol=1e-3, atol=1e-5)
    if "conv3_2" in layers:  # asked for by name, the conv stays before its ReLU
        assert out["true"][0]["conv3_2"].min() < 0
    assert all(p.grad is None for p in net.parameters())


def test_the_winograd_copy_shares_the_nets_weights_and_swaps_convs():
    from verydeep.backbone import fast_copy
    from verydeep.models.winograd import WinogradConv2d

    net = _wide_enough()
    fast = fast_copy(net, ["relu5_3"])
    assert sum(isinstance(m, WinogradConv2d) for m in fast.features) >= 7  # conv3_1 .. conv5_3
    assert {id(p) for p in fast.parameters()} == {id(p) for p in net.parameters()}
    with torch.no_grad():
        net.features[0].weight.mul_(2.0)
    assert torch.equal(fast.features[0].weight, net.features[0].weight)


def test_autocast_bypasses_winograd():
    net = _wide_enough()
    vgg = Backbone(net, Preprocess(), ["relu4_3"], winograd="true")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = vgg(torch.rand(1, 3, 32, 32))["relu4_3"]
    assert y.dtype == torch.bfloat16 and vgg._fast is None  # the copy was never needed
