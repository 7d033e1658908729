"""Localisation (Appendix A): boxes, merging, the VOC reader, the nets and the protocols.

Oracles: torchvision.ops for IoU and box conversion, pixels drawn into real images and pushed
through the real image transforms for box transforms, hand-made cases for merging, and the
critters-voc files for the reader.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
import torchvision.transforms.v2.functional as TF
from conftest import MINI_VOC_IDS
from PIL import Image, ImageDraw

from verydeep.data.preprocess import Preprocess
from verydeep.data.transforms import rescale_smallest
from verydeep.data.voc import UnsafeXMLError, VocAnnotation, VocObject, load_voc, parse_voc_xml
from verydeep.io.checkpoint import Meta, save_model
from verydeep.localization.boxes import (
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    scale_crop_flip_boxes,
    xyxy_to_cxcywh,
)
from verydeep.localization.data import ScaledSet, sample_crops
from verydeep.localization.merge import MergeConfig, greedy_merge
from verydeep.localization.metrics import baseline_guesses, loc_error, mean_training_box
from verydeep.localization.net import LocTrainConfig, box_loss, class_boxes, make_loc_net, train_localizer
from verydeep.localization.protocol import Guess, Net, window_boxes
from verydeep.models.vgg import VGG

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRITTERS = DATA / "critters-voc"
needs_critters = pytest.mark.skipif(not CRITTERS.is_dir(), reason=f"real data absent: {CRITTERS}")


pytestmark = pytest.mark.usefixtures("one_thread")


def random_boxes(n, gen, size=100.0):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1)


# --- boxes -------------------------------------------------------------------------------
def test_iou_and_conversions_match_torchvision():
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(20, gen), random_boxes(30, gen)
    torch.testing.assert_close(box_iou(a, b), tvops.box_iou(a, b))
    torch.testing.assert_close(xyxy_to_cxcywh(a), tvops.box_convert(a, "xyxy", "cxcywh"))
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(a)), a)


def test_iou_hand_cases():
    sq = torch.tensor([[0.0, 0, 10, 10]])
    assert box_iou(sq, sq).item() == 1.0
    assert box_iou(sq, torch.tensor([[10.0, 0, 20, 10]])).item() == 0.0  # touching edges
    assert box_iou(sq, torch.tensor([[0.0, 0, 5, 10]])).item() == 0.5
    assert box_iou(sq, torch.tensor([[5.0, 5, 5, 5]])).item() == 0.0  # empty box


def bright_bbox(img: torch.Tensor) -> list[int]:
    """xyxy (edges) of the pixels brighter than half in a (C, H, W) uint8 image."""
    ys, xs = torch.nonzero(img[0] > 127, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("side,flip", [(200, False), (200, True), (130, True)])
def test_box_follows_rescale_crop_flip_of_the_image(side, flip):
    # draw a white rectangle, push the image through the real PIL transforms, find it again
    img = Image.new("RGB", (160, 100))
    box = torch.tensor([[30.0, 20.0, 90.0, 70.0]])
    ImageDraw.Draw(img).rectangle((30, 20, 89, 69), fill=(255, 255, 255))
    scaled = rescale_smallest(img, side)
    f = side / 100
    left, top, crop = 37, 11, 120
    out = scaled.crop((left, top, left + crop, top + crop))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    found = bright_bbox(TF.pil_to_tensor(out))
    expect = clip_boxes(scale_crop_flip_boxes(box, f, left, top, crop, flip), crop, crop)[0]
    assert torch.allclose(torch.tensor(found, dtype=torch.float32), expect, atol=1.0), (found, expect)


def test_training_crops_keep_their_boxes():
    # one object per image, drawn white; every sampled crop's target must frame the white pixels
    random.seed(0)
    imgs, boxes = [], []
    for _ in range(4):
        img = torch.zeros(3, 80, 120, dtype=torch.uint8)
        x0, y0 = random.randint(0, 70), random.randint(0, 40)
        x1, y1 = x0 + random.randint(20, 50), y0 + random.randint(20, 40)
        img[:, y0:y1, x0:x1] = 255
        imgs.append(img)
        boxes.append(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
    ds = ScaledSet(imgs, boxes, [torch.tensor([0])] * 4, [1.0] * 4, list("abcd"))
    gen = torch.Generator().manual_seed(1)
    batch = sample_crops(ds, torch.arange(4).repeat(8), crop=64, generator=gen)
    checked = 0
    for crop, target, ok in zip(batch.images, batch.targets, batch.valid, strict=True):
        if not ok:
            assert crop.max() == 0
            continue
        visible = clip_boxes(cxcywh_to_xyxy(target * 64), 64, 64)
        assert bright_bbox(crop) == [round(v) for v in visible.tolist()]
        checked += 1
    assert checked > 10


# --- merging -----------------------------------------------------------------------------
def test_merge_two_clusters_and_a_loner():
    b = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [30, 30, 40, 40]])
    s = torch.tensor([0.2, 0.3, 0.1, 0.9])
    boxes, scores, counts = greedy_merge(b, s)
    # the cluster of three averages to the mean box and sums its scores (0.6 < 0.9: ranked 2nd)
    assert counts.tolist() == [1, 3]
    torch.testing.assert_close(boxes[1], b[:3].mean(0))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6]))


def test_merge_threshold_is_respected():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10]])  # IoU 1/3
    s = torch.ones(2)
    assert len(greedy_merge(a, s, MergeConfig(threshold=0.34))[0]) == 2
    assert len(greedy_merge(a, s, MergeConfig(threshold=0.33))[0]) == 1
    # centre measure: centres 5 apart, mean size 10 -> distance 0.5
    assert len(greedy_merge(a, s, MergeConfig("centre", 0.49))[0]) == 2
    assert len(greedy_merge(a, s, MergeConfig("centre", 0.51))[0]) == 1


def test_merge_pair_vs_count_average_and_max_score():
    b = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [3, 0, 13, 10]])
    s = torch.tensor([1.0, 2.0, 3.0])
    # identical boxes merge first; count averaging weights the pair 2:1, pair averaging 1:1
    count = greedy_merge(b, s, MergeConfig(average="count", score="max"))
    pair = greedy_merge(b, s, MergeConfig(average="pair"))
    torch.testing.assert_close(count[0][0], torch.tensor([1.0, 0, 11, 10]))
    torch.testing.assert_close(pair[0][0], torch.tensor([1.5, 0, 11.5, 10]))
    assert count[1].tolist() == [3.0] and pair[1].tolist() == [6.0]


def test_merge_nothing_close_keeps_all_sorted():
    b = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]])
    boxes, scores, counts = greedy_merge(b, torch.tensor([0.1, 0.5, 0.3]))
    assert scores.tolist() == pytest.approx([0.5, 0.3, 0.1]) and counts.tolist() == [1, 1, 1]
    torch.testing.assert_close(boxes[0], b[1])
    with pytest.raises(ValueError, match="measure"):
        MergeConfig(measure="l2")


# --- VOC reader --------------------------------------------------------------------------
@needs_critters
def test_voc_reader_on_the_real_files():
    train, val = load_voc(CRITTERS, "train"), load_voc(CRITTERS, "val")
    assert (len(train), len(val)) == (291, 73)
    assert sum(len(a.objects) for a in train + val) == 483
    first = next(a for a in train if a.image_id == "kangaroo-00001")
    assert (first.width, first.height, len(first.objects)) == (450, 319, 2)
    assert first.objects[0].box == (232.0, 88.0, 386.0, 262.0)  # 1-based 233..386 -> edges
    assert {o.name for a in train for o in a.objects} == {"kangaroo", "raccoon"}
    assert sum(a.depth == 1 for a in train + val) == 3  # the greyscale photographs
    assert any(o.truncated for a in train for o in a.objects)
    # boxes and image sizes agree with the JPEG files (via PIL's header)
    with Image.open(CRITTERS / "JPEGImages" / first.filename) as im:
        assert im.size == (first.width, first.height)


def test_voc_reader_refuses_doctype_and_entities():
    bomb = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
    <annotation><filename>&lol2;</filename></annotation>"""
    with pytest.raises(UnsafeXMLError):
        parse_voc_xml(bomb, "x")
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>'
    with pytest.raises(UnsafeXMLError):
        parse_voc_xml(utf16.encode("utf-16"), "x")
    with pytest.raises(ValueError, match="size/width"):
        parse_voc_xml(b"<annotation><filename>a.jpg</filename></annotation>", "x")
    with pytest.raises(ValueError, match="malformed"):
        parse_voc_xml(b"<annotation>", "x")


def test_voc_difficult_filter_and_zero_based_coordinates():
    xml = b"""<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height></size>
    <object><name>cat</name><difficult>1</difficult><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>5</xmax>
    <ymax>5</ymax></bndbox></object><object><name>dog</name><truncated>1</truncated><bndbox><xmin>2</xmin>
    <ymin>3</ymin><xmax>9</xmax><ymax>8.5</ymax></bndbox></object></annotation>"""
    ann = parse_voc_xml(xml, "a", one_based=False)
    assert ann.boxes().tolist() == [[0, 0, 5, 5], [2, 3, 9, 8.5]]
    assert ann.boxes(difficult=False).tolist() == [[2, 3, 9, 8.5]]
    assert ann.labels(["dog", "cat"]).tolist() == [1, 0] and ann.objects[1].truncated
    assert ann.boxes(["dog"]).shape == (1, 4) and ann.boxes(["bird"]).shape == (0, 4)
    with pytest.raises(ValueError, match="empty box"):
        parse_voc_xml(xml.replace(b"<xmax>9</xmax>", b"<xmax>1</xmax>"), "a")  # xmax < xmin


# --- nets --------------------------------------------------------------------------------
TINY = {"num_classes": 3, "width_mult": 0.125, "fc_width": 32, "crop_size": 32}


def test_loc_net_keeps_the_body_and_replaces_the_last_layer():
    torch.manual_seed(0)
    cls = VGG("A", **TINY).eval()
    for head, outputs in (("scr", 4), ("pcr", 12)):
        loc = make_loc_net(cls, head).eval()
        assert loc.classifier[6].out_features == outputs and loc.build_kwargs["num_classes"] == outputs
        for key, value in cls.state_dict().items():
            if not key.startswith("classifier.6"):
                torch.testing.assert_close(loc.state_dict()[key], value)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(loc.dense_forward(x).flatten(1), loc(x), rtol=1e-4, atol=1e-6)
        assert loc.dense_forward(torch.randn(1, 3, 96, 64)).shape == (1, outputs, 3, 2)
    assert cls.classifier[6].out_features == 3  # the classifier itself is untouched


def test_class_boxes_and_euclidean_loss():
    out = torch.arange(24.0).view(2, 12)
    torch.testing.assert_close(
        class_boxes(out, torch.tensor([2, 1]), "pcr"), out.view(2, 3, 4)[[0, 1], [2, 1]]
    )
    torch.testing.assert_close(class_boxes(out, torch.tensor([2, 1]), "scr"), out[:, :4])
    pred, target = torch.tensor([[1.0, 0, 0, 0], [5, 5, 5, 5]]), torch.zeros(2, 4)
    assert box_loss(pred, target, torch.tensor([True, False])).item() == 0.5  # 1^2 / (2 * 1)
    assert box_loss(pred, target, torch.tensor([True, True])).item() == (1 + 100) / 4
    assert box_loss(pred, target, torch.tensor([False, False])).item() == 0.0


def test_window_boxes_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    m = torch.rand(8, 2, 3, generator=gen)  # two classes' boxes on a 2 x 3 grid
    got = window_boxes(m, crop=64, stride=32)
    for i in range(2):
        for j in range(3):
            for k in range(2):
                cx, cy, w, h = (m[4 * k : 4 * k + 4, i, j] * 64).tolist()
                cx, cy = cx + 32 * j, cy + 32 * i
                want = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                torch.testing.assert_close(got[i * 3 + j, k], want)


@pytest.mark.parametrize("flip", [False, True])
def test_dense_pass_maps_windows_back_to_the_photograph(flip):
    # a box net whose every output is "the whole window" returns the receptive windows themselves
    from verydeep.localization.protocol import classify_pass, dense_pass

    torch.manual_seed(0)
    cls = VGG("A", **TINY).eval()
    loc = make_loc_net(cls, "scr")
    torch.nn.init.zeros_(loc.classifier[6].weight)
    with torch.no_grad():
        loc.classifier[6].bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]))
    prep = Preprocess.preset("torchvision")
    photo = Image.new("RGB", (192, 128))  # rescaled to smallest side 64 (Q = 448 at crop 32): 3 x 2 windows
    classified = classify_pass(photo, 448, flip, [Net(cls, prep)])
    boxes, post, image_post = dense_pass(photo, 128, 448, flip, Net(loc, prep, "scr"), classified)
    windows = sorted([[64.0 * j, 64.0 * i, 64.0 * j + 64, 64.0 * i + 64] for i in range(2) for j in range(3)])
    assert sorted(boxes[:, 0].tolist()) == windows  # factor 2 back to the photograph
    assert post.shape == (6, 3) and torch.allclose(post.sum(1), torch.ones(6))
    assert image_post.shape == (3,)


def test_several_classifiers_score_the_boxes_with_their_mean_posteriors():
    # a classification ensemble: each position's and the image's posteriors are the mean of each
    # classifier's own, also when one classifier has another crop (its map resized to the box grid)
    from verydeep.localization.protocol import classify_pass
    from verydeep.localization.protocol import dense_pass as scored_pass

    torch.manual_seed(0)
    prep = Preprocess.preset("torchvision")
    c32 = Net(VGG("A", **TINY).eval(), prep)
    c64 = Net(VGG("A", **(TINY | {"crop_size": 64})).eval(), prep)
    loc = Net(make_loc_net(VGG("A", **TINY), "scr").eval(), prep, "scr")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 224, 3), dtype=np.uint8))

    def dense_pass(photo, side, q, flip, loc, classifiers):  # the box net scored by these classifiers
        return scored_pass(photo, side, q, flip, loc, classify_pass(photo, q, flip, classifiers))

    one = [dense_pass(photo, 160, 448, False, loc, [c]) for c in (c32, c64)]
    boxes, post, image_post = dense_pass(photo, 160, 448, False, loc, [c32, c64])
    torch.testing.assert_close(boxes, one[0][0])  # the boxes are the box net's alone
    torch.testing.assert_close(post, (one[0][1] + one[1][1]) / 2)
    torch.testing.assert_close(image_post, (one[0][2] + one[1][2]) / 2)
    assert not torch.allclose(one[0][1], one[1][1])  # two different nets: the mean is neither
    twice = dense_pass(photo, 160, 448, False, loc, [c32, c32])
    torch.testing.assert_close(twice[1], one[0][1])  # the same net twice: its own posteriors


def test_collect_evidence_runs_each_classifier_once_per_scale_and_flip():
    # two box nets at the same scales share the classifiers' dense passes, and each net's evidence
    # is what it gets alone (the classifiers do not depend on the box net)
    from verydeep.localization.protocol import collect_evidence

    torch.manual_seed(0)
    prep = Preprocess.preset("torchvision")
    cls = Net(VGG("A", **TINY).eval(), prep)
    locs = [Net(make_loc_net(VGG("A", **TINY), h).eval(), prep, h) for h in ("scr", "pcr")]
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (160, 224, 3), dtype=np.uint8))
    calls = []
    forward = cls.model.dense_forward
    cls.model.dense_forward = lambda x: calls.append(x.shape) or forward(x)
    both = collect_evidence(photo, (224, 160), locs, [256, 448], True, [cls])
    assert len(calls) == 4  # 2 scales x 2 flips, not x 2 box nets
    for n, loc in enumerate(locs):
        alone = collect_evidence(photo, (224, 160), [loc], [256, 448], True, [cls])
        for (q, f), got in ((k[1:], v) for k, v in both.passes.items() if k[0] == n):
            want = alone.passes[(0, q, f)]
            assert got[0] == want[0] == loc.head
            for a, b in zip(got[1:], want[1:], strict=True):
                torch.testing.assert_close(a, b)


def test_classifiers_must_share_their_classes(tmp_path):
    from verydeep.localization.api import load_classifiers

    def save(name, classes, head=None):
        path = tmp_path / f"{name}.safetensors"
        model = VGG("A", **TINY) if head is None else make_loc_net(VGG("A", **TINY), head)
        config = None if head is None else {"localization": {"head": head}}
        save_model(path, model, Meta(classes=classes, config=config))
        return str(path)

    a, b = save("a", ["cat", "dog", "fox"]), save("b", ["cat", "dog", "fox"])
    nets, classes = load_classifiers([a, b])
    assert len(nets) == 2 and classes == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match=r"classes .* are not"):
        load_classifiers([a, save("c", ["ant", "bee", "fly"])])
    with pytest.raises(ValueError, match="is a localisation net"):
        load_classifiers([a, save("loc", ["cat", "dog", "fox"], head="scr")])


def synthetic_set(n=6, seed=0):
    g = random.Random(seed)
    imgs, boxes, labels = [], [], []
    for _ in range(n):
        img = torch.zeros(3, 40, 48, dtype=torch.uint8)
        x0, y0 = g.randint(0, 20), g.randint(0, 15)
        x1, y1 = x0 + g.randint(10, 28), y0 + g.randint(10, 25)
        img[:, y0:y1, x0:x1] = 255
        imgs.append(img)
        boxes.append(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
        labels.append(torch.tensor([g.randint(0, 2)]))
    return ScaledSet(imgs, boxes, labels, [1.0] * n, [str(i) for i in range(n)])


@pytest.mark.parametrize("finetune,box_size", [("fc", "linear"), ("all", "linear"), ("all", "log")])
def test_training_moves_only_what_it_should_and_lowers_the_loss(finetune, box_size):
    torch.manual_seed(0)
    loc = make_loc_net(VGG("A", **TINY), "pcr")
    before = {k: v.clone() for k, v in loc.state_dict().items()}
    cfg = LocTrainConfig(finetune=finetune, steps=40, batch_size=8, lr=0.05, box_size=box_size)
    hist = train_localizer(loc, synthetic_set(), Preprocess.preset("torchvision"), cfg)
    after = loc.state_dict()
    assert (after["features.0.weight"] != before["features.0.weight"]).any() == (finetune == "all")
    assert (after["classifier.0.weight"] != before["classifier.0.weight"]).any()
    assert sum(hist["loss"][-5:]) < sum(hist["loss"][:5]) / 2
    assert all(p.requires_grad for p in loc.parameters())  # unfrozen afterwards


def test_box_net_rate_drops_at_the_given_fractions_of_the_steps():
    cfg = LocTrainConfig(steps=8, lr=0.04, lr_drops=[0.5, 0.75])
    assert [cfg.lr_at(s) for s in range(8)] == pytest.approx([0.04] * 4 + [0.004] * 2 + [0.0004] * 2)
    assert LocTrainConfig(steps=8, lr=0.04).lr_at(7) == 0.04  # default: constant, as before
    for bad in ([0.75, 0.5], [0.0], [1.0], [0.5, 0.5]):
        with pytest.raises(ValueError, match=r"lr_drops \(--lr-drops\) must be increasing fractions"):
            LocTrainConfig(lr_drops=bad)
    loc = make_loc_net(VGG("A", **TINY), cfg.head)
    hist = train_localizer(loc, synthetic_set(), Preprocess.preset("torchvision"), cfg)
    assert hist["lr"] == pytest.approx([cfg.lr_at(s) for s in range(8)])  # what SGD was given


@pytest.mark.parametrize("finetune", ["all", "fc"])
def test_box_training_is_sgd_with_momentum_on_the_box_loss(finetune):
    """``train_localizer`` (the engine's loop, fused SGD) equals SGD written out by hand on the
    same crops: momentum, L2 on weights only, the rate of ``lr_at`` each step, the box loss of the
    labels' boxes, the frozen body left alone. The decay and the rate are large enough that L2 on
    a bias or a rate not dropped would show."""
    from verydeep.localization.net import encode_boxes

    cfg = LocTrainConfig(finetune=finetune, steps=4, batch_size=4, lr=0.05, lr_drops=[0.5])
    cfg.weight_decay, cfg.box_size = 0.1, "log"
    torch.manual_seed(0)
    loc = make_loc_net(VGG("A", **TINY, dropout=0.0), "pcr")
    with torch.no_grad():
        for p in loc.parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.1)  # non-zero biases: decay on them would move them
    ref, ds, prep = VGG(**loc.build_kwargs), synthetic_set(), Preprocess.preset("torchvision")
    ref.load_state_dict(loc.state_dict())
    hist = train_localizer(loc, ds, prep, cfg)
    gen, momentum, losses = torch.Generator().manual_seed(cfg.seed), {}, []
    for step in range(cfg.steps):
        b = sample_crops(ds, torch.randint(len(ds), (4,), generator=gen), 32, True, "largest", gen)
        ref.zero_grad()
        out = ref.classifier(torch.flatten(ref.features(prep(b.images)), 1))
        loss = box_loss(class_boxes(out, b.labels, "pcr"), encode_boxes(b.targets, "log"), b.valid)
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if finetune == "fc" and name.startswith("features"):
                    continue
                g = p.grad + (cfg.weight_decay * p if p.ndim > 1 else 0.0)
                momentum[name] = g if step == 0 else cfg.momentum * momentum[name] + g
                p -= cfg.lr_at(step) * momentum[name]
    assert hist["loss"] == pytest.approx(losses, rel=1e-5)
    for (name, a), b in zip(loc.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_nan_in_box_training_stops_in_one_line_and_applies_no_update():
    from verydeep.engine import NonFiniteLossError

    torch.manual_seed(0)
    loc = make_loc_net(VGG("A", **TINY), "pcr")
    with torch.no_grad():
        loc.classifier[3].weight[0, 0] = float("nan")  # FC7: every box output is NaN
    before = [p.clone() for p in loc.parameters()]
    steps = []
    cfg = LocTrainConfig(steps=3, batch_size=4, lr=0.05)
    with pytest.raises(NonFiniteLossError) as err:
        train_localizer(
            loc, synthetic_set(), Preprocess.preset("torchvision"), cfg, lambda i, _: steps.append(i)
        )
    assert str(err.value) == "non-finite box loss or gradient at step 0; lower the rate (--lr, now 0.05)"
    assert steps == []  # stopped at the first step, before any progress
    for a, b in zip(before, loc.parameters(), strict=True):  # the bad step was skipped
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert not loc.training and all(p.requires_grad for p in loc.parameters())  # as after a run


def test_localize_train_exits_3_on_a_non_finite_loss_and_writes_nothing(tmp_path, capsys):
    from voc_tree import make_voc

    from verydeep.cli import main

    voc = make_voc(tmp_path / "voc", {f"{i}": [("red", 0, (20, 20, 200, 150))] for i in range(2)})
    for i in range(2):
        Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
    cls = VGG("A", **{**TINY, "num_classes": 1})
    with torch.no_grad():  # finite weights whose FC7 overflows to inf: the box loss is NaN
        cls.classifier[0].bias.fill_(1e30)
        cls.classifier[0].weight.fill_(1e30)
        cls.classifier[3].weight.fill_(1e30)
    save_model(tmp_path / "cls.safetensors", cls, Meta(classes=["red"]))
    out = tmp_path / "loc.safetensors"
    args = ["--data", str(voc), "--init", str(tmp_path / "cls.safetensors"), "--out", str(out)]
    args += ["--steps", "2", "--batch-size", "2", "--scale", "256", "--no-progress"]
    assert main(["localize", "train", *args]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["verydeep localize train: stopped: non-finite box loss or gradient at step 0; "
                   "lower the rate (--lr, now 0.001)"]  # fmt: skip
    assert not out.exists()


def test_box_training_runs_in_the_numerics_it_is_given(monkeypatch):
    """Winograd trains through a copy that shares the net's parameters (the net itself moves, as
    in fp32), channels_last is undone afterwards, and the forward runs in bf16 when asked."""
    import verydeep.localization.net as loc_net
    from verydeep.models.winograd import WinogradConv2d
    from verydeep.numerics import Numerics

    views = []  # every 3x3 conv of the tiny net through Winograd's torch ops (none qualify by default)
    swap = loc_net.winograd_convs
    monkeypatch.setattr(
        loc_net, "winograd_convs", lambda m, **kw: views.append(swap(m, 1, 1, False, **kw)) or views[-1]
    )
    cfg, nets, hist = LocTrainConfig(steps=2, batch_size=4, lr=0.05), {}, {}
    for mode, channels_last in (("fp32", False), ("winograd", True), ("bf16", False)):
        torch.manual_seed(0)
        nets[mode] = make_loc_net(VGG("A", **TINY, dropout=0.0), "pcr")
        numerics = Numerics(mode, channels_last)
        prep = Preprocess.preset("torchvision")
        hist[mode] = train_localizer(nets[mode], synthetic_set(), prep, cfg, numerics=numerics)
    assert len(views) == 1 and any(isinstance(m, WinogradConv2d) for m in views[0].modules())
    torch.manual_seed(0)
    start = make_loc_net(VGG("A", **TINY, dropout=0.0), "pcr").state_dict()
    wino, fp32 = nets["winograd"].state_dict(), nets["fp32"].state_dict()
    assert not torch.equal(wino["features.0.weight"], start["features.0.weight"])
    for k, v in wino.items():
        torch.testing.assert_close(v, fp32[k], rtol=1e-4, atol=1e-5, msg=k)
        assert v.is_contiguous()
    assert hist["bf16"]["loss"][0] != hist["fp32"]["loss"][0]  # rounded to bf16 inside the net
    assert hist["bf16"]["loss"][0] == pytest.approx(hist["fp32"]["loss"][0], rel=0.05)


def test_log_sizes_round_trip_and_decode_like_linear_ones():
    from verydeep.localization.net import decode_boxes, encode_boxes

    t = torch.tensor([[0.5, 0.4, 0.2, 1.7], [0.1, 0.9, 1.0, 0.05]])
    assert torch.equal(encode_boxes(t, "linear"), t)
    assert torch.allclose(encode_boxes(t, "log")[:, 2:], t[:, 2:].log())
    assert torch.allclose(decode_boxes(encode_boxes(t, "log"), "log"), t)
    assert decode_boxes(torch.tensor([[0.5, 0.5, -0.3, 2.0]]), "linear").tolist() == [[0.5, 0.5, 0.0, 2.0]]
    # a window's box in both parametrisations: sizes 1.0 (linear) and log 1 = 0 (log)
    lin = torch.tensor([0.5, 0.5, 1.0, 1.0]).view(4, 1, 1).expand(4, 2, 3).clone()
    log = lin.clone()
    log[2:] = 0.0
    assert torch.allclose(window_boxes(lin, 64, 32), window_boxes(log, 64, 32, "log"))
    with pytest.raises(ValueError, match=r"localize\.box_size must be one of linear \| log"):
        LocTrainConfig(box_size="sqrt")


# --- metrics -----------------------------------------------------------------------------
def test_loc_error_top_k_and_baselines():
    anns = [
        VocAnnotation("a", "a.jpg", 100, 100, objects=[VocObject("cat", (0, 0, 50, 50))]),
        VocAnnotation("b", "b.jpg", 200, 100, objects=[VocObject("dog", (0, 0, 200, 100))]),
    ]
    classes = ["cat", "dog"]
    preds = {"a": [Guess(1, (0, 0, 50, 50), 1.0), Guess(0, (0, 0, 50, 50), 0.5)]}  # wrong class first
    assert loc_error(preds, anns, classes, 1) == 1.0  # b has no guess: an error
    assert loc_error(preds, anns, classes, 2) == 0.5
    whole = baseline_guesses(anns, "whole", {"a": 0, "b": 1})
    assert loc_error(whole, anns, classes) == 0.5  # a: IoU 0.25, b: IoU 1
    mean = mean_training_box(anns)
    assert mean == pytest.approx((0.375, 0.375, 0.75, 0.75))
    guess = baseline_guesses(anns, "mean", {"b": 1}, mean)["b"][0]
    assert guess.box == pytest.approx((0.0, 0.0, 150.0, 75.0))


# --- end to end on real photographs ------------------------------------------------------
@needs_critters
def test_end_to_end_cli_on_real_photographs(mini_voc, tmp_path, capsys):
    from verydeep.cli import main
    from verydeep.localization.api import evaluate_boxes, load_net
    from verydeep.localization.protocol import DenseConfig, localize_image

    root, loc = str(mini_voc), str(tmp_path / "loc.safetensors")
    run = tmp_path / "cls"  # the classifier: verydeep train on the VOC image-level labels
    sets = [f"data.root={root}", "data.dataset=voc", "model.arch=A", "model.width_mult=0.125"]
    sets += ["model.fc_width=32", "model.crop_size=32", "data.workers=0", "data.val_fraction=0"]
    sets += ["optim.batch_size=2", "train.max_steps=3", "train.eval_test=false", f"train.out_dir={run}"]
    assert main(["train", "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0
    cls = str(run / "checkpoints" / "last.safetensors")
    args = ["--data", root, "--init", cls, "--out", loc, "--steps", "3", "--head", "pcr"]
    assert main(["localize", "train", *args]) == 0
    assert "localize train" in capsys.readouterr().err  # the bar, which --no-progress turns off below
    loc_net, meta = load_net(loc)
    assert loc_net.head == "pcr" and meta.classes == ["kangaroo", "raccoon"]
    assert loc_net.model.classifier[6].out_features == 8 and loc_net.box_size == "linear"
    log_loc = str(tmp_path / "log.safetensors")  # the size parametrisation travels in the metadata
    assert main(["localize", "train", *args[:4], "--out", log_loc, "--steps", "2", "--box-size", "log"]) == 0
    assert load_net(log_loc)[0].box_size == "log"
    dense = ["--loc", loc, "--cls", cls, "--scales", "256,384"]
    assert (
        main(
            ["localize", "eval", "--data", root, *dense, "--json", str(tmp_path / "r.json"), "--no-progress"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "localize eval" not in err
    assert "dense + merging" in out and "baseline whole/gt_class" in out
    # the whole-image baseline, recomputed by hand: IoU(whole image, best GT box) > 0.5
    report = evaluate_boxes(root, "val", [loc], [cls], DenseConfig(scales=[256, 384]))
    hits = 0
    for a in load_voc(root, "val"):
        whole = torch.tensor([[0.0, 0.0, a.width, a.height]])
        hits += bool(tvops.box_iou(whole, a.boxes()).max() > 0.5)
    assert report["baselines"]["whole/gt_class"] == pytest.approx(1 - hits / len(MINI_VOC_IDS))
    assert set(report["centre"]) == {loc} and 0 <= report["dense"]["top1"] <= 1
    # guesses lie inside the photograph; a drawn PNG has the photograph's size
    photo = CRITTERS / "JPEGImages" / "raccoon-150.jpg"
    cls_net, _ = load_net(cls)
    with Image.open(photo) as im:
        guesses = localize_image(im.convert("RGB"), im.size, [loc_net], [cls_net], DenseConfig(flip=True))
        size = im.size
        by_box = localize_image(im.convert("RGB"), size, [loc_net], [cls_net], DenseConfig(rank="box"))
    assert len(guesses) == 2 and {g.label for g in guesses} == {0, 1}
    assert [g.score for g in by_box] == sorted((g.score for g in by_box), reverse=True)
    for g in guesses:
        assert 0 <= g.box[0] <= g.box[2] <= size[0] and 0 <= g.box[1] <= g.box[3] <= size[1]
    png = tmp_path / "out.png"
    per_net = ["--loc", f"{loc}@256,384", "--cls", cls]  # the net's own scales
    assert main(["localize", "predict", str(photo), *per_net, "--draw", str(png), "--top", "2"]) == 0
    assert capsys.readouterr().out.startswith("1. ")
    with Image.open(png) as im:
        assert im.size == size
    assert main(["localize", "train", "--data", root, "--init", loc, "--out", loc]) == 2  # not a classifier
    # scripts/localization_errors.py judges each guess itself: its top-1 error is evaluate_boxes()'s
    script = Path(__file__).resolve().parents[1] / "scripts" / "localization_errors.py"
    cmd = [sys.executable, str(script), "--data", root, "--split", "val", *dense]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"top-1 error {100 * report['dense']['top1']:.1f}%" in out
    assert sum(int(n) for n in re.findall(r": (\d+), \d+ wrong", out)) == len(MINI_VOC_IDS)


def _tiny_voc(tmp_path, second="bird"):
    """A 2-photo VOC root (val: a cat and a ``second``) and a save(name, classes, head) for nets."""
    from voc_tree import make_voc

    objs = {"0": [("cat", 0, (10, 10, 200, 150))], "1": [(second, 0, (5, 5, 90, 80))]}
    root = make_voc(tmp_path / "voc", objs)
    for i in "01":
        Image.new("RGB", (300, 200), (120, 80, 40)).save(root / "JPEGImages" / f"{i}.jpg")
    (root / "ImageSets/Main/val.txt").write_text("0\n1\n")

    def save(name, classes, head=None):
        path = tmp_path / f"{name}.safetensors"
        model = VGG("A", **TINY) if head is None else make_loc_net(VGG("A", **TINY), head)
        config = None if head is None else {"localization": {"head": head}}
        save_model(path, model, Meta(classes=classes, train_scale=[256], config=config))
        return str(path)

    return root, save


def test_classes_the_nets_do_not_know_are_one_line_before_any_pass(tmp_path, capsys):
    # an object class the classifier lacks crashed `localize eval` with an IndexError in the centre
    # crop's pass (tune exited 0); a per-class box net of another class order read other boxes
    from verydeep.cli import main

    root, save = _tiny_voc(tmp_path)
    cls, pcr = save("cls", ["cat", "dog", "fox"]), save("pcr", ["cat", "dog", "fox"], "pcr")
    for action in ("eval", "tune"):
        out = tmp_path / f"{action}.json"
        argv = ["localize", action, "--data", str(root), "--split", "val", "--loc", pcr, "--cls", cls]
        assert main([*argv, "--json", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"verydeep localize: error: {root} (val) has classes the classifier lacks: bird", err
        assert not out.exists()
    (root / "ImageSets/Main/val.txt").write_text("0\n")  # cats only: the nets know them
    other = save("pcr-other", ["dog", "cat", "fox"], "pcr")
    argv = ["localize", "eval", "--data", str(root), "--split", "val", "--loc", other, "--cls", cls]
    assert main([*argv, "--train-split", "val"]) == 2
    assert (
        "a per-class box net's classes dog, cat, fox are not the classifier's cat, dog, fox"
        in capsys.readouterr().err
    )
    photo = str(root / "JPEGImages" / "0.jpg")
    assert main(["localize", "predict", photo, "--loc", other, "--cls", cls]) == 2
    assert "are not the classifier's" in capsys.readouterr().err
    assert main([*argv[:6], "--loc", pcr, "--cls", cls, "--train-split", "val", "--scales", "256"]) == 0


def test_shared_scales_are_refused_when_every_box_net_has_its_own(tmp_path, capsys):
    # --scales and --scale-sets changed nothing then: tune listed 24 "settings" and recommended a
    # --scales that no net ran at
    from verydeep.cli import main

    root, save = _tiny_voc(tmp_path, second="dog")
    cls, scr = save("cls", ["cat", "dog", "fox"]), save("scr", ["cat", "dog", "fox"], "scr")
    base = ["--data", str(root), "--split", "val", "--cls", cls, "--loc", f"{scr}@256"]
    assert main(["localize", "eval", *base, "--train-split", "val", "--scales", "448"]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("--scales has no effect: every --loc has its own @Q scales")
    )
    assert main(["localize", "tune", *base, "--scale-sets", "256;448"]) == 2
    assert "--scale-sets has no effect" in capsys.readouterr().err
    out = tmp_path / "tune.json"
    assert main(["localize", "tune", *base, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 12 and not any("--scales" in r["flags"] for r in rows)  # merging only
    best = json.loads(out.read_text())["best"]["flags"].split()
    assert main(["localize", "eval", *base, "--train-split", "val", *best]) == 0
    other = save("scr2", ["cat", "dog", "fox"], "scr")  # another net, without its own: --scales serves it
    mixed = ["--loc", f"{scr}@256", "--loc", other]
    capsys.readouterr()
    assert main(["localize", "eval", *base[:6], *mixed, "--train-split", "val", "--scales", "448"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ") and "skipped" not in ln]
    assert len(rows) == 2 + 2 + 4 + 1  # centre x 2 nets, dense top-1/top-3, 4 baselines, classifier
    assert all(re.search(r"[a-z0-9)] +\d{1,3}\.\d( |$)", ln) for ln in rows), (
        rows
    )  # "class100.0" was one word
