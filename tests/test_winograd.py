"""Winograd F(4x4, 3x3) against torch's own convolution (the oracle), values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from verydeep.models.vgg import CFGS, VGG
from verydeep.models.winograd import WinogradConv2d, winograd_conv3x3, winograd_convs


@pytest.mark.parametrize(
    "shape",
    [(2, 8, 16, 16, 16), (1, 3, 5, 7, 9), (2, 4, 4, 1, 1), (3, 16, 8, 14, 30), (1, 2, 3, 6, 5)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_equals_conv2d_values_and_gradients(shape: tuple[int, ...]) -> None:
    """Sizes that are and are not multiples of the 4-pixel tile, down to a single pixel."""
    n, c, co, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    sizes = ((n, c, h, w), (co, c, 3, 3), (co,))
    x, k, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in sizes)
    for t in (x, k, b):
        t.requires_grad_()
    ours, ref = winograd_conv3x3(x, k, b), F.conv2d(x, k, b, padding=1)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-10)
    grads = torch.autograd.grad(ours.square().sum(), (x, k, b))
    want = torch.autograd.grad(ref.square().sum(), (x, k, b))
    for a, e in zip(grads, want, strict=True):
        assert torch.allclose(a, e, atol=1e-9)


def test_fp32_error_is_rounding_only() -> None:
    """In fp32 the transforms add rounding, about 1e-5 of the output's scale at 512 channels."""
    g = torch.Generator().manual_seed(0)
    x, k = torch.randn(1, 512, 14, 14, generator=g), torch.randn(64, 512, 3, 3, generator=g) * 0.02
    ref = F.conv2d(x.double(), k.double(), padding=1)
    err = (winograd_conv3x3(x, k).double() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 1e-4


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv3x3(torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="NCHW"):
        winograd_conv3x3(torch.zeros(4, 8, 8), torch.zeros(4, 4, 3, 3))


@pytest.mark.parametrize("arch", sorted(CFGS))
def test_swapped_net_is_the_same_net(arch: str) -> None:
    """Every config: only 3x3 convs with enough inputs are swapped (C's 1x1 convs stay), the
    state_dict keys and tensors are unchanged, the caller's net is left alone, outputs agree."""
    torch.manual_seed(0)
    net = VGG(arch, num_classes=5, width_mult=0.125, fc_width=16, crop_size=32).eval()
    wg = winograd_convs(net, min_channels=32)
    swapped = [m for m in wg.features if isinstance(m, WinogradConv2d)]
    assert swapped and all(m.in_channels >= 32 for m in swapped)
    assert not any(isinstance(m, WinogradConv2d) for m in net.features)
    assert all(
        isinstance(b, torch.nn.Conv2d) and b.kernel_size == (1, 1)
        for a, b in zip(wg.features, net.features, strict=True)
        if not isinstance(a, WinogradConv2d) and isinstance(b, torch.nn.Conv2d) and b.in_channels >= 32
    )
    sd, ref = wg.state_dict(), net.state_dict()
    assert list(sd) == list(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wg(x), net(x), atol=1e-5)
