"""Tests of the test protocol (Section 3.2): each method against a direct computation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from verydeep.config import pixels
from verydeep.data.preprocess import Preprocess
from verydeep.evaluation import (
    EvalData,
    EvalOptions,
    centre_probs,
    default_scales,
    dense_pooled,
    dense_probs,
    evaluate_models,
    evaluate_net,
    grid_offsets,
    multicrop_probs,
    resolve_scales,
)
from verydeep.evaluation.core import grid_crops, match_channels, rescale, window_trim
from verydeep.io.checkpoint import Meta
from verydeep.models.dense import to_dense
from verydeep.models.vgg import VGG
from verydeep.numerics import Numerics

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_nets import PREP, trained_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def soft(logits: torch.Tensor) -> torch.Tensor:
    return logits.double().softmax(1)


def test_dense_at_crop_size_equals_fc_form():
    net = trained_tiny()
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    inp = PREP(x)
    with torch.no_grad():
        fc, fc_flip = soft(net(inp)), soft(net(inp.flip(-1)))
        got = dense_probs(net, x, PREP, flip=False).double()
        got_flip = dense_probs(net, x, PREP, flip=True).double()
    torch.testing.assert_close(got, fc, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_flip, (fc + fc_flip) / 2, atol=1e-5, rtol=0)
    assert not torch.allclose(fc, fc_flip, atol=1e-3)  # the flip really is another input


@pytest.mark.parametrize("h, w", [(37, 37), (55, 73), (64, 96), (40, 70)])
def test_dense_windows_are_centred_or_top_left(h, w):
    """The windows of a dense pass are 32 px apart; of a side 32 + 32 k + r the last r pixels are
    never seen. Centred, the image is cut to 32 + 32 k pixels with floor(r / 2) taken from the
    top/left (computed here by hand), which then equals a plain pass over that cut image."""
    net = trained_tiny()
    x = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    rh, rw = (h - 32) % 32, (w - 32) % 32
    cut = x[..., rh // 2 : h - (rh - rh // 2), rw // 2 : w - (rw - rw // 2)]
    assert cut.shape[-2] % 32 == 0 and cut.shape[-1] % 32 == 0
    with torch.no_grad():
        centre = dense_probs(net, x, PREP, flip=True, align="centre")
        topleft = dense_probs(net, x, PREP, flip=True, align="topleft")
        torch.testing.assert_close(centre, dense_probs(net, cut, PREP, flip=True, align="topleft"))
        maps = net.dense_forward(PREP(cut))
    assert maps.shape[-2:] == (1 + (h - 32) // 32, 1 + (w - 32) // 32)  # every window kept
    if rh == rw == 0:
        torch.testing.assert_close(centre, topleft)  # the paper's sizes: no difference
    else:
        assert not torch.allclose(centre, topleft, atol=1e-4)
    with pytest.raises(ValueError, match="align"):
        dense_probs(net, x, PREP, align="middle")


def test_dense_averaging_order_is_explicit():
    """Oracle: the standalone conv-module form (to_dense) and hand-written averaging."""
    net = trained_tiny()
    oracle = to_dense(net).eval()
    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        maps = [oracle(PREP(x)).double(), oracle(PREP(x.flip(-1))).double()]
        paper = sum(m.mean((2, 3)).softmax(1) for m in maps) / 2
        per_pos = sum(m.softmax(1).mean((2, 3)) for m in maps) / 2
        assert maps[0].shape[-2:] == (2, 3)
        torch.testing.assert_close(dense_probs(net, x, PREP).double(), paper, atol=1e-5, rtol=0)
        got = dense_probs(net, x, PREP, average="softmax").double()
        torch.testing.assert_close(got, per_pos, atol=1e-5, rtol=0)
        scores = dense_pooled(net, x, PREP, output="scores").double()
        torch.testing.assert_close(scores, (maps[0] + maps[1]).mean((2, 3)) / 2, atol=1e-4, rtol=0)
    assert not torch.allclose(paper, per_pos, atol=1e-4)


def test_grid_offsets_are_evenly_spaced_from_border_to_border():
    assert grid_offsets(256, 224) == [0, 8, 16, 24, 32]
    assert grid_offsets(300, 224) == [0, 19, 38, 57, 76]
    assert grid_offsets(224, 224) == [0] * 5
    assert grid_offsets(41, 32, n=1) == [4]  # span 9: 4.5 rounds to even, as CenterCrop does
    for side in range(32, 80):  # --grid 1 is the centre method's crop, pixel for pixel (issue 18, item 4)
        x = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side)
        (t,) = grid_offsets(side, 32, n=1)
        assert torch.equal(grid_crops(x, 32, 1)[0, 0], TF.center_crop(x, [32, 32])[0]), side
        assert t == round((side - 32) / 2)
    assert grid_offsets(43, 32, n=3) == [0, 6, 11]  # 5.5 rounds half up
    try:
        grid_offsets(31, 32)
    except ValueError:
        pass
    else:
        raise AssertionError("a side smaller than the crop must fail")


def test_grid_crops_positions_are_exact():
    x = torch.arange(2 * 3 * 40 * 50).view(2, 3, 40, 50)
    crops = grid_crops(x, 32, 5)
    assert crops.shape == (2, 25, 3, 32, 32)
    tops, lefts = [0, 2, 4, 6, 8], [0, 5, 9, 14, 18]  # (40-32)*i/4 and (50-32)*i/4, half up
    for k, (t, s) in enumerate((t, s) for t in tops for s in lefts):
        assert torch.equal(crops[:, k], x[:, :, t : t + 32, s : s + 32])


def test_multicrop_equals_crop_by_crop_computation():
    net = trained_tiny()
    x = torch.randint(0, 256, (2, 3, 41, 47), dtype=torch.uint8)
    with torch.no_grad():
        expect = torch.zeros(2, 3, dtype=torch.float64)
        for t in grid_offsets(41, 32):
            for s in grid_offsets(47, 32):
                c = PREP(x[:, :, t : t + 32, s : s + 32])
                expect += (soft(net(c)) + soft(net(c.flip(-1)))) / 2 / 25
        got = multicrop_probs(net, x, PREP, chunk=7).double()  # chunking must not matter
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=0)


def test_centre_crop_matches_torchvision_placement():
    net = trained_tiny()
    x = torch.randint(0, 256, (3, 3, 37, 45), dtype=torch.uint8)
    top, left = round((37 - 32) / 2), round((45 - 32) / 2)  # torchvision: int(round(...))
    with torch.no_grad():
        expect = soft(net(PREP(x[:, :, top : top + 32, left : left + 32])))
        torch.testing.assert_close(centre_probs(net, x, PREP).double(), expect, atol=1e-5, rtol=0)


def test_default_scales_follow_the_paper():
    assert default_scales([256]) == [224, 256, 288]
    assert default_scales([384], multi=False) == [384]
    assert default_scales([256, 512]) == [256, 384, 512]
    assert default_scales([256, 512], multi=False) == [384]
    assert resolve_scales("256,352", [256]) == [256, 352]
    assert [pixels(q, 32) for q in default_scales([256])] == [32, 37, 41]


def _photo(seed: int, size: tuple[int, int]) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (3, 6, 8), generator=g, dtype=torch.uint8)  # smooth picture
    return TF.to_pil_image(TF.resize(small, [size[1], size[0]], antialias=True))


def _folder(tmp_path, sizes):
    """ImageFolder of lossless PNGs with the given (w, h) sizes, alternating classes a/b."""
    for i, size in enumerate(sizes):
        d = tmp_path / "ab"[i % 2]
        d.mkdir(exist_ok=True)
        _photo(i, size).save(d / f"{i:02d}.png")
    return tmp_path


def test_multiscale_dense_over_a_folder_equals_direct_computation(tmp_path):
    """Bucketed, batched, multi-scale dense eval vs one image at a time through to_dense."""
    from verydeep.evaluation import open_data

    net = trained_tiny(classes=2)
    root = _folder(tmp_path, [(60, 40), (60, 40), (45, 70), (33, 33), (60, 40), (90, 50)])
    data = open_data(str(root), classes=["a", "b"])
    qs = [32, 37, 41]
    opts = EvalOptions(methods=["dense", "multicrop"], workers=0, progress=False, batch_size=8)
    res = evaluate_net(net, PREP, data, qs, opts)
    oracle = to_dense(net).eval()
    with torch.no_grad():
        for i, (path, _) in enumerate(data.samples):
            img = Image.open(path).convert("RGB")
            per_q, per_q_mc = [], []
            for q in qs:
                x = TF.pil_to_tensor(TF.resize(img, q, antialias=True))[None]
                h, w = x.shape[-2:]  # dense windows centred: the unseen border cut from both sides
                rh, rw = (h - 32) % 32, (w - 32) % 32
                cut = x[..., rh // 2 : h - (rh - rh // 2), rw // 2 : w - (rw - rw // 2)]
                maps = [oracle(PREP(cut)).double(), oracle(PREP(cut.flip(-1))).double()]
                per_q.append(sum(m.mean((2, 3)).softmax(1) for m in maps) / 2)
                per_q_mc.append(multicrop_probs(net, x, PREP).double())
            expect = torch.cat(per_q).mean(0)
            torch.testing.assert_close(res.probs["dense"][i].double(), expect, atol=1e-5, rtol=0)
            torch.testing.assert_close(
                res.probs["multicrop"][i].double(), torch.cat(per_q_mc).mean(0), atol=1e-5, rtol=0
            )


def _dense_oracle(net, image, q_pixels, prep):
    """The paper's multi-scale dense posteriors written out from ``dense_forward`` alone: per Q,
    the centred window-covered pixels, score maps of the image and its flip, spatial mean,
    soft-max, then the mean over flips and over scales."""
    per_q = []
    for q in q_pixels:
        x = window_trim(match_channels(rescale(image, q), net.in_channels)[None], net.crop_size)
        maps = [net.dense_forward(prep(v)).double() for v in (x, x.flip(-1))]
        per_q.append(sum(m.mean((2, 3)).softmax(1) for m in maps)[0] / 2)
    return torch.stack(per_q).mean(0)


def test_ensemble_of_different_nets_averages_posteriors():
    a = trained_tiny(classes=3, seed=1)
    b = VGG("B", num_classes=3, width_mult=0.125, fc_width=24, crop_size=48).eval()
    prep_b = Preprocess.preset("torchvision")
    ma = Meta(classes=list("xyz"), train_scale=[256], preprocess=PREP.to_dict())
    mb = Meta(classes=list("xyz"), train_scale=[256, 512], preprocess=prep_b.to_dict())
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (7, 3, 30, 30), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    data = EvalData(list("xyz"), images=images, labels=labels)
    opts = EvalOptions(methods=["dense", "centre+dense"], workers=0, progress=False)
    res = evaluate_models([("a", a, ma), ("b", b, mb)], data, opts)
    with torch.no_grad():
        pa = torch.stack([_dense_oracle(a, x, [32, 37, 41], PREP) for x in images]).float()
        pb = torch.stack([_dense_oracle(b, x, [55, 82, 110], prep_b) for x in images]).float()
    post = res["posteriors"]
    torch.testing.assert_close(post[("a", "dense")], pa, atol=1e-5, rtol=0)
    torch.testing.assert_close(post[("b", "dense")], pb, atol=1e-5, rtol=0)
    torch.testing.assert_close(post[("ensemble of 2", "dense")], (pa + pb) / 2, atol=1e-5, rtol=0)
    row = next(r for r in res["rows"] if r["net"] == "ensemble of 2" and r["method"] == "dense")
    wrong = ((pa + pb).argmax(1) != labels).sum().item()
    assert abs(row["top1_err"] - 100 * wrong / 7) < 1e-9 and row["forwards_per_image"] == 12
    assert [r["test_pixels"] for r in res["rows"][:3:2]] == ["32,37,41", "55,82,110"]


def test_channels_are_matched_to_the_net():
    grey = torch.randint(0, 256, (2, 1, 5, 5), dtype=torch.uint8)
    assert torch.equal(match_channels(grey, 3), grey.repeat(1, 3, 1, 1))
    rgb = torch.tensor([[[[255]], [[0]], [[0]]]], dtype=torch.uint8)
    pil_l = Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0))
    assert match_channels(rgb, 1).item() == pil_l


def test_bucketing_is_exact_whatever_the_flush_order():
    """Shape buckets flushed when full, when memory is short (keep=1) or at the end: same sums."""
    from verydeep.evaluation.runner import _Accumulator

    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (7, 5), (5, 7), (6, 6), (5, 7), (9, 4)] * 3
    xs = [torch.randint(0, 256, (1, 2, *s), generator=g, dtype=torch.uint8) for s in shapes]
    owner = torch.tensor([i % 7 for i in range(len(xs))])
    expect = torch.zeros(7, 2, dtype=torch.float64)
    count = torch.zeros(7)
    for x, o in zip(xs, owner, strict=True):
        expect[o] += x.double().mean((2, 3))[0]
        count[o] += 1
    for limit, keep in ((2.0, 8), (100.0, 1), (1e9, 10**9)):
        calls: list[int] = []

        def fn(b, calls=calls):
            calls.append(len(b))
            return b.double().mean((2, 3))

        acc = _Accumulator(fn, 7, limit, 35, torch.device("cpu"), keep)
        for x, o in zip(xs, owner, strict=True):
            acc.add(x, o[None])
        torch.testing.assert_close(acc.result().double(), (expect / count[:, None]).float().double())
        assert sum(calls) == len(xs) and (limit < 1e9 or len(calls) == 4)  # 4 distinct shapes


def test_bf16_and_channels_last_runtime_agree_with_fp32():
    from verydeep.evaluation import Runtime

    net = trained_tiny()
    x = torch.randint(0, 256, (3, 3, 40, 52), dtype=torch.uint8)
    with torch.inference_mode():
        ref = dense_probs(net, x, PREP)
        cl = dense_probs(net, x, PREP, rt=Runtime("cpu", Numerics(channels_last=True)))
        bf = multicrop_probs(net, x, PREP, rt=Runtime("cpu", Numerics("bf16", channels_last=True)))
        bf_ref = multicrop_probs(net, x, PREP)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=0)
    assert bf.dtype == torch.float32 and (bf - bf_ref).abs().max() < 0.05


def test_the_bf16_copy_is_made_once_and_leaves_the_net_as_it_was():
    from verydeep.evaluation.precision import for_precision

    net = trained_tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy, autocast = for_precision(net, PREP, "bf16")
    assert autocast and copy is not net and next(copy.parameters()).dtype == torch.bfloat16
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # fp32 untouched
    assert for_precision(copy, PREP, "bf16")[0] is copy  # already bf16: no second copy
    assert for_precision(net, PREP, "fp32") == (net, False)


def test_forward_pass_counts_and_method_parsing():
    from verydeep.evaluation.runner import forwards_per_image, parse_methods

    opts = EvalOptions()
    assert forwards_per_image("dense+multicrop", 3, opts) == 156  # paper: 2 + 50 per scale
    assert forwards_per_image("multicrop", 3, EvalOptions(flip=False, grid=3)) == 27
    assert parse_methods(" centre , dense+multicrop") == ["centre", "dense+multicrop"]
    for bad in ("dens", "dense+", "", "dense,dense", "dense+dense", "dense+multicrop,dense+multicrop"):
        try:
            parse_methods(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} must be refused")


@pytest.mark.parametrize("output", ["probs", "fc7", "pool3"])
def test_dense_passes_are_chunked_under_a_memory_cap_with_the_same_result(output):
    """Issue 43, item 13: a large Q ran every image and its flip as one batch. Under a cap a pass
    holds fewer images, or an image without its flip; the vectors stay the same."""
    from verydeep.evaluation.core import Runtime, dense_pooled

    torch.manual_seed(0)
    net = VGG("A", num_classes=5, width_mult=0.125, fc_width=16, crop_size=32).eval()
    x = torch.randint(0, 256, (4, 3, 64, 96), dtype=torch.uint8)
    per_image = (2 * 64 + 3) * 64 * 96 * 4
    sizes = []
    real = net.features.forward
    net.features.forward = lambda t: (sizes.append(len(t)), real(t))[1]
    free = dense_pooled(net, x, PREP, output=output, rt=Runtime(memory_cap=None))
    assert sizes == [8] or output == "pool3"  # all 4 images and their flips at once
    for cap, passes in ((3 * per_image, [2, 2, 2, 2]), (per_image, [1] * 8)):
        sizes.clear()
        got = dense_pooled(net, x, PREP, output=output, rt=Runtime(memory_cap=cap))
        torch.testing.assert_close(got, free, rtol=1e-5, atol=1e-6)
        assert sizes == passes or output == "pool3", sizes  # pool3 runs through extract, not features
