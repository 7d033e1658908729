"""Perceptual, style, total-variation and unweighted LPIPS losses against NumPy computations on
the features ``extract`` gives (itself tested against torchvision in test_layers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verydeep.backbone import to_net_input
from verydeep.data.preprocess import Preprocess
from verydeep.losses import LPIPSDistance, PerceptualLoss, StyleLoss, TotalVariation, gram
from verydeep.models.layers import extract
from verydeep.models.vgg import VGG

PREP = Preprocess((120.0, 115.0, 100.0), (60.0, 60.0, 60.0))


def tiny() -> VGG:
    torch.manual_seed(0)
    return VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()


def feats(net: VGG, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = extract(net, to_net_input(x, PREP), names)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}


def np_gram(f: np.ndarray) -> np.ndarray:
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return np.einsum("nci,ndi->ncd", flat, flat) / (c * h * w)


def test_gram_is_numpys():
    f = torch.randn(2, 5, 3, 4)
    np.testing.assert_allclose(gram(f).numpy(), np_gram(f.numpy().astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_style_and_perceptual_losses_are_numpys():
    net, x, y = tiny(), torch.rand(2, 3, 48, 40), torch.rand(1, 3, 48, 40)
    layers = {"relu1_2": 0.5, "relu3_3": 2.0}
    fx, fy = feats(net, x, list(layers)), feats(net, y, list(layers))
    style = sum(w * ((np_gram(fx[k]) - np_gram(fy[k])) ** 2).sum((1, 2)).mean() for k, w in layers.items())
    content = sum(w * ((fx[k] - fy[k]) ** 2).mean() for k, w in layers.items())
    assert float(StyleLoss(net, PREP, layers)(x, y)) == pytest.approx(style, rel=1e-4)
    assert float(PerceptualLoss(net, PREP, layers)(x, y)) == pytest.approx(content, rel=1e-4)


def test_unweighted_lpips_is_numpys():
    net, x, y = tiny(), torch.rand(3, 3, 40, 40), torch.rand(3, 3, 40, 40)
    names = ["relu1_2", "relu2_2", "relu3_3"]
    fx, fy = feats(net, x, names), feats(net, y, names)

    def unit(f):
        return f / (np.sqrt((f**2).sum(1, keepdims=True)) + 1e-10)

    want = sum(((unit(fx[k]) - unit(fy[k])) ** 2).sum(1).mean((1, 2)) for k in names)
    got = LPIPSDistance(net, PREP, dict.fromkeys(names, 1.0), reduction="none")(x, y)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4)
    assert float(LPIPSDistance(net, PREP, dict.fromkeys(names, 1.0))(x, x)) == 0.0


def test_total_variation_is_numpys():
    x = torch.rand(2, 3, 7, 9)
    a = x.numpy().astype(np.float64)
    for p in (1, 2):
        want = (np.abs(np.diff(a, axis=2)) ** p).mean() + (np.abs(np.diff(a, axis=3)) ** p).mean()
        assert float(TotalVariation(p)(x)) == pytest.approx(want, rel=1e-5)


def test_style_loss_is_zero_for_the_image_itself_and_grows_with_a_colour_shift():
    net, x = tiny(), torch.rand(1, 3, 64, 64) * 0.6
    loss = StyleLoss(net, PREP, {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0})
    shifted = [float(loss(x + torch.tensor([s, 0.0, -s]).view(1, 3, 1, 1), x)) for s in (0.0, 0.1, 0.2, 0.4)]
    assert shifted[0] == 0.0 and shifted[1] < shifted[2] < shifted[3]


def test_gradients_reach_the_image_only_in_batches_and_under_autocast():
    net, y = tiny(), torch.rand(1, 3, 48, 48)
    x = torch.rand(4, 3, 48, 48, requires_grad=True)
    total = StyleLoss(net, PREP)(x, y) + PerceptualLoss(net, PREP)(x, y) + TotalVariation()(x)
    total.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and all(p.grad is None for p in net.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = StyleLoss(net, PREP)(x, y)
    full = StyleLoss(net, PREP)(x, y)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(full.item(), rel=0.1)


def test_bad_presets_and_batches_are_one_line():
    with pytest.raises(ValueError, match="unknown layer preset 'vgg'"):
        StyleLoss(tiny(), PREP, "vgg")
    with pytest.raises(ValueError, match="weights >= 0"):
        PerceptualLoss(tiny(), PREP, {"relu1_1": -1.0})
    with pytest.raises(ValueError, match="batches of 2 and 3 images"):
        PerceptualLoss(tiny(), PREP)(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32))
