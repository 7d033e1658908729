"""int8 inference (issue 19, item 2): every config quantises, really runs int8 kernels, agrees
with fp32, and eval / predict / features take it with one flag."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.ao.nn.quantized as nnq

from verydeep.cli import main
from verydeep.evaluation.core import crop_probs, dense_probs
from verydeep.evaluation.precision import for_precision, spread
from verydeep.features import DescriptorConfig
from verydeep.models.arch import CFGS
from verydeep.models.int8 import quantize_int8
from verydeep.models.vgg import VGG

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_nets import PREP, trained_tiny

ARCHS = [*CFGS, "D_bn"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_config_quantises_to_int8_kernels_close_to_fp32(arch):
    torch.manual_seed(0)
    net = VGG(arch, num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()
    x = torch.rand(12, 3, 32, 32) * 2 - 1
    q = quantize_int8(net, x[:8])
    convs = [m for m in q.modules() if isinstance(m, nnq.Conv2d)]  # ConvReLU2d is a Conv2d
    assert len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in net.features) - 1  # conv1_1: fp32
    assert sum(isinstance(m, nnq.Linear) for m in q.modules()) == 2  # FC6, FC7; FC8 stays fp32
    assert isinstance(q.fcs[2], torch.nn.Linear) and not isinstance(q.fcs[2], nnq.Linear)
    with torch.inference_mode():
        ref, got = net(x), q(x)
    assert got.shape == ref.shape
    err = (got - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.1, err  # rounded (so int8 ran), but by a few per cent of the range at most


@pytest.mark.parametrize("arch", ARCHS)
def test_equalisation_keeps_the_function_and_evens_the_channel_ranges(arch):
    import copy

    from verydeep.models.int8 import _fold_bn, equalize

    torch.manual_seed(1)
    net = VGG(arch, num_classes=5, width_mult=0.125, fc_width=32, crop_size=32).eval()
    for m in net.features:  # uneven channel scales, as training leaves them
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data *= torch.rand(m.out_channels, 1, 1, 1) * 4 + 0.05
    feats = _fold_bn(copy.deepcopy(net.features))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = net.features(x)
        spread_before = _spread(feats)
        equalize(feats)
        torch.testing.assert_close(feats(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert _spread(feats) < spread_before


def _spread(features) -> float:
    """Mean over convs of max/min output-channel weight range: 1 when all channels are alike."""
    convs = [m for m in features if isinstance(m, torch.nn.Conv2d)]
    r = [c.weight.abs().amax(dim=(1, 2, 3)) for c in convs[:-1]]  # the last conv has no partner
    return sum((v.max() / v.min()).item() for v in r) / len(r)


def test_dense_head_equals_the_fc_form_and_any_size_runs():
    """The int8 dense head sees the same rows as the FC form: identical numbers on a crop."""
    net = trained_tiny()
    q = quantize_int8(net, torch.rand(8, 3, 32, 32))
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(q.dense_forward(x)[:, :, 0, 0], q(x))
        for h, w in [(32, 33), (70, 45), (96, 128)]:  # odd sizes and batch 1: no recompiles, no limits
            assert q.dense_forward(torch.rand(1, 3, h, w)).shape == (
                1,
                3,
                (h - 32) // 32 + 1,
                (w - 32) // 32 + 1,
            )
    assert next(net.parameters()).dtype == torch.float32  # the caller's net is left as it was


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 160, (n, 3, 32, 32), generator=g).float()
    x[torch.arange(n), y % 3] += 90
    return x.to(torch.uint8), y


def test_a_trained_net_agrees_with_fp32():
    """>= 99% top-1 agreement and small probability differences (the bench measures the same on
    photographs with a trained Imagewoof net: docs/BENCHMARKS.md)."""
    net = trained_tiny()
    calib, _ = _task(32, 1)
    q = quantize_int8(net, PREP(calib.float()))
    x, _ = _task(400, 2)
    with torch.inference_mode():
        a, b = crop_probs(net, x, PREP), crop_probs(q, x, PREP)
        da, db = dense_probs(net, x, PREP), dense_probs(q, x, PREP)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.99
    assert (da.argmax(1) == db.argmax(1)).float().mean() >= 0.99
    assert (a - b).abs().max() < 0.1


def test_int8_checked_recomputes_exactly_the_near_ties_in_fp32():
    """int8-checked: rows whose int8 top-2 margin is under the margin are fp32's posteriors, the
    rest int8's, for crops and dense maps; margin 1 is fp32 itself, margin 0 int8 itself."""
    net = trained_tiny()
    calib, _ = _task(32, 1)
    g = torch.Generator().manual_seed(5)
    crops, _ = _task(200, 2)
    images = torch.randint(0, 256, (60, 3, 48, 80), generator=g, dtype=torch.uint8)
    for probs, x in ((crop_probs, crops), (dense_probs, images)):
        checked, _ = for_precision(net, PREP, "int8-checked", calib)
        plain, _ = for_precision(net, PREP, "int8", calib)
        with torch.inference_mode():
            ref, fast = probs(net, x, PREP), probs(plain, x, PREP)
            top = fast.topk(2, 1).values
            margin = top[:, 0] - top[:, 1]
            checked.check_margin = margin.median().item()  # about half are near-ties
            near = margin < checked.check_margin
            got = probs(checked, x, PREP)
            assert 0 < near.sum() < len(x) and checked.rechecked == near.sum() and checked.checked == len(x)
            torch.testing.assert_close(got[near], ref[near])
            torch.testing.assert_close(got[~near], fast[~near])
            checked.check_margin = 1.0
            torch.testing.assert_close(probs(checked, x, PREP), ref)
            checked.check_margin = 0.0
            torch.testing.assert_close(probs(checked, x, PREP), fast)
    with pytest.raises(ValueError, match="features have none: use int8"):
        DescriptorConfig(precision="int8-checked")


def test_int8_is_cpu_only_and_auto_never_picks_emulated_bf16(monkeypatch):
    import verydeep.numerics as numerics

    def inference_precision(name: str, device: torch.device) -> str:
        return numerics.resolve(name, device).mode

    for name in ("int8", "int8-checked"):
        with pytest.raises(ValueError, match="CPU only"):
            inference_precision(name, torch.device("cuda"))
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_precision("fp16", torch.device("cpu"))
    monkeypatch.setattr(numerics.hardware, "native_bf16", lambda device: False)
    assert inference_precision("auto", torch.device("cpu")) == "winograd"  # never bf16 here
    monkeypatch.setattr(numerics.hardware, "native_bf16", lambda device: True)
    assert inference_precision("auto", torch.device("cpu")) == "bf16"
    assert spread(list(range(10)), 4) == [0, 3, 6, 9] and spread([1, 2], 4) == [1, 2]


@pytest.fixture
def hymenoptera_val(shared_data):
    root = shared_data / "hymenoptera" / "val"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.fixture
def photo_ckpt(tmp_path):
    from verydeep.io.checkpoint import Meta, save_model

    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=32, crop_size=32).eval()
    path = tmp_path / "a.safetensors"
    meta = Meta(preprocess=PREP.to_dict(), classes=["ants", "bees"], train_scale=[256.0])
    save_model(path, net, meta)
    return path


def test_eval_predict_and_features_take_int8_with_one_flag(hymenoptera_val, photo_ckpt, tmp_path, capsys):
    common = ["--precision", "int8", "--scales", "single", "--device", "cpu"]
    assert (
        main(["eval", str(photo_ckpt), "--data", str(hymenoptera_val), "--limit", "8", "--json", *common])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["precision"] == "int8" and rows[0]["n"] == 8
    checked = ["eval", str(photo_ckpt), "--data", str(hymenoptera_val), "--limit", "8", "--json"]
    assert main([*checked, "--precision", "int8-checked", *common[2:]]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["precision"] == "int8-checked" and 0 <= row["rechecked_share"] <= 1
    photos = sorted(hymenoptera_val.rglob("*.jpg"))[:3]
    assert main(["predict", "-m", str(photo_ckpt), *map(str, photos), "--json", *common[:2]]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    out = tmp_path / "f.safetensors"
    calib = ["--calibrate", str(hymenoptera_val / "ants")]
    assert (
        main(["features", str(photo_ckpt), str(hymenoptera_val), "--out", str(out), *common[:2], *calib]) == 0
    )
    capsys.readouterr()
    from verydeep.io.features import load_descriptors

    d = load_descriptors(out)
    assert d.info["descriptor"]["precision"] == "int8" and len(d.paths) > 50
