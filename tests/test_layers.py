"""Named layers and ``extract``, against torchvision's ``create_feature_extractor`` on the same
random weights, and against the layer indices perceptual-loss code has used for years (Johnson et
al.'s relu1_2 ... relu4_3 of VGG-16 at ``features.3/8/15/22``, Gatys et al.'s relu*_1 of VGG-19)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from verydeep.models.layers import extract, feature_names, layer_info, layer_names
from verydeep.models.vgg import VGG

# torchvision name: (our arch, well-known {name: features index})
NETS = {
    "vgg11": ("A", {"relu1_1": 1, "pool1": 2, "relu3_2": 9, "pool5": 20}),
    "vgg16": ("D", {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "pool5": 30}),
    "vgg19": ("E", {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}),
    "vgg16_bn": ("D_bn", {"bn1_1": 1, "relu1_2": 5, "relu2_2": 12, "relu3_3": 22, "relu4_3": 32}),
}


def twins(tv_name: str) -> tuple[torch.nn.Module, VGG]:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, tv_name)(weights=None).eval()
    for m in tv.modules():
        if isinstance(m, torch.nn.ReLU):  # in place, it would overwrite the conv outputs it returns
            m.inplace = False
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics that are not the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ours = VGG(NETS[tv_name][0], num_classes=1000).eval()
    ours.load_state_dict(tv.state_dict())
    return tv, ours


@pytest.mark.parametrize("tv_name", NETS)
def test_every_named_layer_is_torchvisions_node(tv_name):
    tv, ours = twins(tv_name)
    names = feature_names(ours)
    for name, index in NETS[tv_name][1].items():
        assert names.index(name) == index, name
    nodes = {f"features.{i}": n for i, n in enumerate(names)}
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        want = create_feature_extractor(tv, return_nodes=nodes)(x)
        got = extract(ours, x, names)
    assert list(got) == names
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5)


def test_the_dense_head_at_the_crop_is_torchvisions_classifier():
    tv, ours = twins("vgg11")
    nodes = {"classifier.0": "fc6", "classifier.1": "relu6", "classifier.3": "fc7", "classifier.6": "fc8"}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = create_feature_extractor(tv, return_nodes=nodes)(x)
        got = extract(ours, x, list(nodes.values()))
    for n in nodes.values():
        torch.testing.assert_close(got[n].flatten(1), want[n], rtol=1e-4, atol=1e-5)


def tiny(arch: str = "D_bn") -> VGG:
    torch.manual_seed(0)
    return VGG(arch, num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)


def test_weights_are_frozen_and_the_input_differentiable_and_the_net_untouched():
    net = tiny().train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    out = extract(net, x, ["relu3_3", "fc7"])
    sum(v.sum() for v in out.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())  # no gradient reached a weight
    assert net.training and all(p.requires_grad for p in net.parameters())  # left as it was
    with torch.no_grad():  # batch norm ran on its running statistics, as in eval mode
        want = extract(net.eval(), x, ["relu3_3"], train_weights=True)["relu3_3"]
    torch.testing.assert_close(out["relu3_3"], want)
    extract(net, x, ["fc6"], train_weights=True)["fc6"].sum().backward()
    assert net.features[0].weight.grad is not None and net.classifier[0].weight.grad is not None


def test_gradients_pass_gradcheck():
    net = tiny("B").double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)  # pool3 needs 8 px
    f = lambda t: extract(net, t, ["relu2_2", "pool3"])["pool3"]  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)


def test_nothing_past_the_deepest_layer_is_computed(monkeypatch):
    net = tiny()
    names = layer_names(net)
    later = net.features[names.index("pool3") + 1]
    monkeypatch.setattr(later, "forward", lambda x: (_ for _ in ()).throw(AssertionError("ran")))
    monkeypatch.setattr(net, "fc_as_conv", lambda: (_ for _ in ()).throw(AssertionError("ran")))
    out = extract(net, torch.rand(1, 3, 32, 32), ["pool3", "conv1_1"])
    assert list(out) == ["pool3", "conv1_1"]  # in the order asked for


def test_a_conv_output_is_kept_before_its_in_place_relu():
    net = tiny("A").eval()
    out = extract(net, torch.randn(1, 3, 32, 32), ["conv1_1", "relu1_1"])
    assert (out["conv1_1"] < 0).any()
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_names_of_a_lrn_and_one_line_errors():
    net = tiny("A-LRN")
    assert layer_names(net)[:4] == ["conv1_1", "relu1_1", "norm1", "pool1"]
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['relu3_3'\] for VGG A-LRN") as e:
        extract(net, torch.rand(1, 3, 32, 32), ["relu3_3"])
    assert "\n" not in str(e.value)


def test_layer_info_gives_shapes_and_strides():
    info = {r["name"]: r for r in layer_info(tiny("D"), 64)}
    assert info["relu3_3"] == {"name": "relu3_3", "channels": 32, "stride": 4, "shape": (32, 16, 16)}
    assert info["pool5"]["stride"] == 32 and info["fc6"]["shape"] == (32, 2, 2)
    assert info["fc8"]["channels"] == 5 and info["fc8"]["stride"] == 32
    with pytest.raises(ValueError, match="smaller than the net's crop"):
        layer_info(tiny("D"), 16)


def test_info_lists_the_layers(capsys):
    import json

    from verydeep.cli import main

    assert main(["info", "--layers", "vgg11", "--size", "256", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["relu3_2"]["shape"] == [256, 64, 64] and rows["fc6"]["shape"] == [4096, 2, 2]
    assert main(["info", "--layers", "vgg99"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_output_cut_short_by_the_reader_is_no_error():
    import subprocess
    import sys

    cmd = f"{sys.executable} -m verydeep info --layers A | head -1"
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    assert r.stdout.startswith("VGG A: named layers") and r.stderr == ""


def test_a_winograd_copy_names_the_same_layers_and_stays_frozen():
    """``precision=winograd`` runs a copy whose convs hold their ReLUs (an Identity in its place)."""
    from verydeep.models.winograd import winograd_convs

    net = tiny("B").eval()
    fast = winograd_convs(net, min_channels=1, min_out=1, fused=False)
    assert layer_names(fast) == layer_names(net)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    want = extract(net, x, ["relu2_2", "pool3"])
    got = extract(fast, x, ["relu2_2", "pool3"])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-4)
    got["pool3"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in fast.parameters())
    with pytest.raises(ValueError, match="conv2_2 holds its ReLU here"):
        extract(fast, x, ["conv2_2"])
