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
    wg = winograd_convs(net, min_channels=32, min_out=1, fused=False)
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


# --- the fused C++ transforms (models/winograd_ext.py) ---------------------------------------


@pytest.fixture(scope="module")
def fused():
    from verydeep.models import winograd_ext

    if not winograd_ext.available():
        pytest.skip("the Winograd kernels do not build here (no C++ compiler?)")
    return winograd_ext.fused_conv3x3


@pytest.mark.parametrize(
    "shape",
    # channels below, at and above the 32-channel block; sizes on and off the 4-pixel tile
    [(2, 3, 5, 7, 9), (1, 32, 32, 8, 8), (2, 40, 70, 13, 6), (1, 2, 3, 1, 1), (3, 65, 33, 9, 11)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("relu", [False, True], ids=["conv", "conv+relu"])
def test_fused_equals_conv2d_values_and_gradients(
    fused, shape: tuple[int, ...], channels_last: bool, relu: bool
) -> None:
    """Against F.conv2d (and F.relu): values, the three gradients, and the input gradient in the
    input's own memory format."""
    n, c, co, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    sizes = ((n, c, h, w), (co, c, 3, 3), (co,))
    x, k, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in sizes)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for t in (x, k, b):
        t.requires_grad_()
    ours, ref = fused(x, k, b, relu=relu), F.conv2d(x, k, b, padding=1)
    ref = F.relu(ref) if relu else ref
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-10)
    assert (ref == 0).any() == relu  # the ReLU case really masks something
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)  # not symmetric in anything
    grads = torch.autograd.grad(ours, (x, k, b), upstream)
    want = torch.autograd.grad(ref, (x, k, b), upstream)
    for a, e in zip(grads, want, strict=True):
        assert torch.allclose(a, e, atol=1e-9)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert grads[0].is_contiguous(memory_format=fmt)


def test_fused_passes_gradcheck_and_rounds_like_fp32(fused) -> None:
    g = torch.Generator().manual_seed(3)
    args = [
        torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
        for s in ((1, 6, 5, 7), (4, 6, 3, 3), (4,))
    ]
    assert torch.autograd.gradcheck(fused, args)
    x, k = torch.randn(2, 512, 14, 14, generator=g), torch.randn(64, 512, 3, 3, generator=g) * 0.02
    ref = F.conv2d(x.double(), k.double(), padding=1)
    err = (fused(x, k).double() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 1e-4


def test_fused_layer_falls_back_where_the_kernels_do_not_apply(fused, monkeypatch) -> None:
    """Under autocast (bf16) the layer takes the torch-ops path; fp32 outside it, the kernels."""
    from verydeep.models import winograd_ext

    conv = torch.nn.Conv2d(64, 128, 3, padding=1)
    layer = WinogradConv2d(conv, fused=True)
    x = torch.randn(1, 64, 8, 8)
    calls = []
    monkeypatch.setattr(winograd_ext, "fused_conv3x3", lambda *a, **kw: calls.append(1) or fused(*a, **kw))
    with torch.no_grad():
        ref = conv(x)
        assert torch.allclose(layer(x), ref, atol=1e-4) and calls == [1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, want = layer(x), winograd_conv3x3(x, conv.weight, conv.bias)
        assert calls == [1] and torch.equal(y, want)
    with pytest.raises(ValueError, match="fp32/fp64 on the CPU"):
        fused(x.bfloat16(), conv.weight.bfloat16())


def test_fused_default_swaps_stages_2_to_5_of_vgg16(fused) -> None:
    """With the kernels: every 3x3 conv with 64+ inputs and 128+ outputs (VGG-16: 11 of 13),
    each with the ReLU after it (an Identity keeps its place), and the net's output unchanged."""
    torch.manual_seed(0)
    net = VGG("D", num_classes=10, width_mult=1.0, fc_width=16, crop_size=32).eval()
    wg = winograd_convs(net)
    swapped = [m for m in wg.features if isinstance(m, WinogradConv2d)]
    assert all(m.relu for m in swapped) and sum(isinstance(m, torch.nn.Identity) for m in wg.features) == 11
    assert list(wg.state_dict()) == list(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wg(x), net(x), atol=1e-4)
    assert len(swapped) == 11 and all(
        m.fused and m.in_channels >= 64 and m.out_channels >= 128 for m in swapped
    )
    assert len([m for m in winograd_convs(net, fused=False).features if isinstance(m, WinogradConv2d)]) == 8


def test_train_builds_winograd_nets_where_auto_says(fused, monkeypatch) -> None:
    """`verydeep train`'s net: Winograd convs on an AVX2-only CPU in fp32, plain convs where bf16
    is native; the optimiser holds the swapped net's parameters, and a step moves both nets alike."""
    from types import SimpleNamespace

    from verydeep import hardware
    from verydeep.build import model_and_optimizer
    from verydeep.config import RunConfig

    data = SimpleNamespace(classes=list("abc"), channels=3)
    keys = [
        "model.arch=A",
        "model.width_mult=0.25",
        "model.fc_width=16",
        "model.crop_size=32",
        "optim.lr=0.1",
    ]
    cfg = RunConfig.from_sources(overrides=keys)
    nets = {}
    for flags in ({"avx2", "fma"}, {"avx2", "avx512f", "avx512_bf16"}):
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: flags)
        torch.manual_seed(0)
        model, opt, _ = model_and_optimizer(cfg, data, torch.device("cpu"))
        held = {id(p) for group in opt.param_groups for p in group["params"]}
        assert held == {id(p) for p in model.parameters()}
        x, y = (
            torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
            torch.tensor([0, 1, 2, 0]),
        )
        F.cross_entropy(model(x), y).backward()
        opt.step()
        nets["avx2" if "fma" in flags else "bf16"] = model
    assert sum(isinstance(m, WinogradConv2d) for m in nets["avx2"].modules()) == 4  # 64->128, 128->128 x3
    assert not any(isinstance(m, WinogradConv2d) for m in nets["bf16"].modules())
    a, b = nets["avx2"].state_dict(), nets["bf16"].state_dict()
    assert list(a) == list(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _two_class_folder(root, sizes=((40, 52), (61, 45), (48, 48))):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in ("ants", "bees"):
        (root / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            px = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(px).save(root / c / f"{i}.png")
    return root


def test_winograd_precision_matches_fp32_through_eval_predict_and_features(tmp_path, capsys):
    """``--precision winograd`` (issue 19): one flag on eval, predict and features; fp32's numbers
    up to rounding. Width 1/2: 6 of A's 8 convs qualify (64+ inputs, 128+ outputs)."""
    import json

    from verydeep.cli import main
    from verydeep.data.preprocess import Preprocess
    from verydeep.evaluation.precision import for_precision
    from verydeep.io.checkpoint import Meta, save_model
    from verydeep.io.features import load_descriptors

    torch.manual_seed(0)
    net = VGG("A", num_classes=2, width_mult=0.5, fc_width=32, crop_size=32).eval()
    prep = Preprocess.preset("paper", mean=(123.68, 116.78, 103.94))
    fast, bf16 = for_precision(net, prep, "winograd")
    assert not bf16 and fast is not net and sum(isinstance(m, WinogradConv2d) for m in fast.modules()) == 6
    assert not any(isinstance(m, WinogradConv2d) for m in net.modules())  # the caller's net untouched
    ckpt = tmp_path / "a.safetensors"
    save_model(ckpt, net, Meta(preprocess=prep.to_dict(), classes=["ants", "bees"], train_scale=[256.0]))
    data = _two_class_folder(tmp_path / "photos")
    photos = [str(p) for p in sorted(data.rglob("*.png"))]
    got = {}
    for mode in ("fp32", "winograd"):
        flags = ["--precision", mode, "--device", "cpu"]
        assert main(["eval", str(ckpt), "--data", str(data), "--json", "--scales", "single", *flags]) == 0
        rows = json.loads(capsys.readouterr().out)["rows"]
        assert main(["predict", "-m", str(ckpt), *photos, "--json", "--top", "2", *flags]) == 0
        pred = json.loads(capsys.readouterr().out)
        out = tmp_path / f"{mode}.safetensors"
        assert main(["features", str(ckpt), str(data), "--out", str(out), *flags]) == 0
        capsys.readouterr()
        d = load_descriptors(out)
        assert d.info["descriptor"]["precision"] == mode and rows[0]["precision"] == mode
        got[mode] = (rows, pred, torch.from_numpy(d.features))
    (r32, p32, f32), (rw, pw, fw) = got["fp32"], got["winograd"]
    assert [r["top1_err"] for r in rw] == [r["top1_err"] for r in r32]
    assert [[t["index"] for t in p["top"]] for p in pw] == [[t["index"] for t in p["top"]] for p in p32]
    for a, b in zip(pw, p32, strict=True):
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-5)
    torch.testing.assert_close(fw, f32, rtol=1e-4, atol=1e-5)
    assert not torch.equal(fw, f32)  # the convs really changed: rounding differs, values agree


def test_winograd_inference_is_cpu_only_and_auto_without_bf16(monkeypatch):
    import verydeep.numerics as numerics

    with pytest.raises(ValueError, match="CPU only"):
        numerics.resolve("winograd", torch.device("cuda"))
    monkeypatch.setattr(numerics.hardware, "native_bf16", lambda device: False)
    assert numerics.resolve("auto", torch.device("cpu")).mode == "winograd"
    monkeypatch.setattr(numerics.hardware, "native_bf16", lambda device: True)
    assert numerics.resolve("auto", torch.device("cpu")).mode == "bf16"


@pytest.mark.parametrize("fused", [False, True], ids=["torch-ops", "fused"])
def test_training_after_inference_in_one_process(fused) -> None:
    """The transform matrices are cached: made first under inference_mode (predict, eval, the
    bench's inference part) they must still serve a backward pass later (the bench failed so)."""
    from verydeep.models import winograd
    from verydeep.models.summary import conv_macs

    winograd._matrices.cache_clear()
    net = VGG("A", num_classes=3, width_mult=0.5, fc_width=16, crop_size=32)
    wg = winograd_convs(net, fused=fused)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        wg(x)
    loss = wg(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in wg.parameters())
    assert conv_macs(wg, 32, 32) == conv_macs(net, 32, 32)  # counted as the direct convs they replace


def test_a_fresh_clone_reuses_the_build_and_an_edit_rebuilds(tmp_path, monkeypatch) -> None:
    """ninja rebuilds when a source is newer than its object, and a clone makes every file new:
    the build keeps its own copy of the source, keyed by content, flags and torch's version."""
    import os

    from verydeep.models import winograd_ext

    clone = tmp_path / "clone" / "winograd_kernels.cpp"
    clone.parent.mkdir()
    clone.write_bytes(winograd_ext._SOURCE.read_bytes())
    monkeypatch.setattr(winograd_ext, "_SOURCE", clone)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    name, copy = winograd_ext._build_source(["-O3"])
    assert copy.parent == tmp_path / "cache" / name and copy.read_bytes() == clone.read_bytes()
    os.utime(copy, (1_000_000, 1_000_000))  # the first build, long ago
    os.utime(clone, None)  # a later clone: the same text, a new time
    assert winograd_ext._build_source(["-O3"]) == (name, copy) and copy.stat().st_mtime == 1_000_000
    assert winograd_ext._build_source(["-O3", "-mavx2"])[0] != name  # other flags: another build
    clone.write_text(clone.read_text() + "\n// edited\n")
    edited, edited_copy = winograd_ext._build_source(["-O3"])
    assert edited != name and edited_copy.read_text().endswith("// edited\n")
    assert copy.stat().st_mtime == 1_000_000  # the old build is left as it was


def test_an_unwritable_build_directory_is_a_one_line_reason(tmp_path, monkeypatch) -> None:
    from verydeep.models import winograd_ext

    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "not-a-dir"))
    with pytest.raises(RuntimeError, match=r"Winograd kernels could not be built \(.+\)"):
        winograd_ext.kernels.__wrapped__()  # the uncached function: this process's build stays


def test_loading_the_kernels_prints_nothing_but_our_own_lines(fused) -> None:
    """torch's extension loader logs "No CUDA runtime is found" at import on CPU machines that
    have a CUDA_HOME; a user's eval or train output should not carry it."""
    import subprocess
    import sys

    code = "from verydeep.models import winograd_ext as w; assert w.available()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "CUDA" not in r.stderr and all(line.startswith("verydeep: ") for line in r.stderr.splitlines())
