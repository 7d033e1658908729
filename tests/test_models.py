"""Model tests: every config, torchvision as the oracle for keys, layouts and logits."""

import pytest
import torch
import torchvision.models as tvm

from verydeep.models.dense import to_dense, to_fc
from verydeep.models.init import init_from_net_a, init_weights
from verydeep.models.summary import conv_macs, count_params, table1, table2
from verydeep.models.vgg import CFGS, VGG, conv_names, parse_arch

ALL = ["A", "A-LRN", "B", "C", "D", "E", "A_bn", "B_bn", "D_bn", "E_bn"]
SMALL = {"num_classes": 7, "width_mult": 0.125, "fc_width": 32, "crop_size": 64}
TV = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


@pytest.mark.parametrize("arch", ALL)
def test_forward_and_dense_agree_at_crop_size(arch):
    torch.manual_seed(0)
    net = VGG(arch, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 7)
    dense = net.dense_forward(x)
    assert dense.shape == (2, 7, 1, 1)
    torch.testing.assert_close(dense.flatten(1), logits, rtol=1e-4, atol=1e-5)
    # a larger image gives a score map: (96/32 - 2 + 1) x (128/32 - 2 + 1)
    assert net.dense_forward(torch.randn(1, 3, 96, 128)).shape == (1, 7, 2, 3)


@pytest.mark.parametrize("arch", ALL)
def test_dense_module_round_trip(arch):
    torch.manual_seed(1)
    net = VGG(arch, **SMALL).eval()
    dense = to_dense(net).eval()
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(dense(x), net.dense_forward(x), rtol=1e-4, atol=1e-5)
    back = to_fc(dense, VGG(arch, **SMALL).eval())
    for (k, a), b in zip(net.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_paper_parameter_counts():
    rows = {r["config"]: r for r in table2()}
    assert rows["D"]["params"] == 138_357_544
    assert rows["E"]["params"] == 143_667_240
    # Table 2 in millions, rounded
    for cfg, millions in {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}.items():
        assert round(rows[cfg]["params"] / 1e6) == millions
    assert {r["weight_layers"] for r in rows.values()} == {11, 13, 16, 19}
    assert abs(rows["D"]["gmacs"] - 15.47) < 0.01  # the well-known 15.5 GMACs of VGG-16


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
@pytest.mark.parametrize("bn", [False, True])
def test_torchvision_state_dict_round_trip(name, bn):
    torch.manual_seed(2)
    tv = getattr(tvm, name + ("_bn" if bn else ""))(weights=None).eval()
    ours = VGG(name + ("_bn" if bn else "")).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)
        tv2 = getattr(tvm, name + ("_bn" if bn else ""))(weights=None).eval()
        tv2.load_state_dict(ours.state_dict())
        torch.testing.assert_close(tv2(x), tv(x), rtol=0, atol=0)
    assert ours.arch == TV[name] + ("_bn" if bn else "")


def test_fc_form_rejects_wrong_size():
    net = VGG("A", **SMALL)
    with pytest.raises(ValueError, match="dense_forward"):
        net(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="too small"):
        net.dense_forward(torch.randn(1, 3, 40, 40))


def test_generality_options():
    net = VGG("C", num_classes=3, in_channels=1, width_mult=0.25, fc_width=16, crop_size=96)
    assert net.kernel == 3
    assert net.features[0].weight.shape == (16, 1, 3, 3)
    assert net.classifier[0].in_features == 128 * 9
    assert net(torch.randn(2, 1, 96, 96)).shape == (2, 3)
    kinds = [m.kernel_size for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert kinds.count((1, 1)) == 3  # conv1 layers of C in blocks 3-5
    with pytest.raises(ValueError, match="too small"):
        VGG("A", crop_size=16)


def test_parse_arch_names_and_errors():
    assert parse_arch("vgg16_bn") == ("D", True)
    assert parse_arch("a-lrn") == ("A-LRN", False)
    assert parse_arch("E") == ("E", False)
    for bad in ("F", "vgg17", "A-LRN_bn"):
        with pytest.raises(ValueError):
            parse_arch(bad)


def test_lrn_matches_krizhevsky_formula():
    net = VGG("A-LRN", **SMALL)
    lrn = net.features[2]
    x = torch.rand(1, 8, 4, 4) * 10
    sq = torch.nn.functional.pad(x.pow(2), (0, 0, 0, 0, 2, 2))
    sums = torch.stack([sq[:, c : c + 5].sum(1) for c in range(8)], 1)
    expected = x / (2.0 + 1e-4 * sums) ** 0.75
    torch.testing.assert_close(lrn(x), expected)


@pytest.mark.parametrize("size", [1, 2, 4, 5, 7])
@pytest.mark.parametrize("channels", [1, 3, 16])
def test_lrn_equals_torchs_local_response_norm_with_gradients(size, channels):
    from verydeep.models.vgg import LRN

    ours, theirs = LRN(size, 3e-3, 0.75, 1.5), torch.nn.LocalResponseNorm(size, 3e-3, 0.75, 1.5)
    x = (torch.randn(2, channels, 5, 7, dtype=torch.float64) * 4).requires_grad_()
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        a, b = ours(xm), theirs(xm)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        ga, gb = (torch.autograd.grad(y.pow(2).sum(), x)[0] for y in (a, b))
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    y3 = torch.randn(2, channels, 9, dtype=torch.float64)  # 3-D input: torch's own path
    torch.testing.assert_close(ours(y3), theirs(y3))


def test_init_schemes_and_net_a_initialisation():
    a = VGG("A", **SMALL)
    init_weights(a, "normal", std=0.01)
    w = torch.cat([m.weight.flatten() for m in a.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(w.std().item() - 0.01) < 1e-3
    assert all(m.bias.abs().sum() == 0 for m in a.modules() if isinstance(m, torch.nn.Conv2d))
    for arch in ("B", "C", "D", "E"):
        deep = VGG(arch, **SMALL)
        init_weights(deep, "glorot")
        own = {k: v.weight.clone() for k, v in deep.conv_layers().items()}
        copied = init_from_net_a(deep, a)
        assert copied[:4] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]
        for name in copied[:4]:
            assert torch.equal(deep.conv_layers()[name].weight, a.conv_layers()[name].weight)
        # the layers A lacks keep their own initialisation, untouched (this fails if anything
        # is copied into them; comparing with A's random weights could not)
        for name in set(own) - set(copied):
            assert torch.equal(deep.conv_layers()[name].weight, own[name]), (arch, name)
        torch.testing.assert_close(deep.classifier[6].weight, a.classifier[6].weight)
    with pytest.raises(ValueError, match="unknown init"):
        init_weights(a, "he")


def test_summary_tables():
    text = table1()
    assert "conv1-256" in text and "LRN" in text and text.count("maxpool") == 5 * len(CFGS)
    net = VGG("D")
    assert count_params(net) == 138_357_544
    assert conv_macs(net, 256, 256) > conv_macs(net, 224, 224)  # dense form on a larger image
    assert conv_names("C")[6] == "conv3_3"
