"""VOC splits and image-level labels, training a classifier on a VOC tree, and tuning the merge
settings on held-out photographs (hand-made evidence whose right answer is known)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from voc_tree import make_voc

from verydeep.data.voc import VocAnnotation, VocObject, image_level_samples, read_split
from verydeep.data.voc_labels import read_voc_labels
from verydeep.localization.protocol import Evidence
from verydeep.localization.tune import candidates, score_grid

CRITTERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "critters-voc"
needs_critters = pytest.mark.skipif(not CRITTERS.is_dir(), reason=f"real data absent: {CRITTERS}")
pytestmark = pytest.mark.usefixtures("one_thread")


@needs_critters
def test_split_slices_partition_the_split_and_mix_the_classes():
    ids = read_split(CRITTERS, "train")
    head, tail = read_split(CRITTERS, "train[:80%]"), read_split(CRITTERS, "train[80%:]")
    assert not set(head) & set(tail) and sorted(head + tail) == sorted(ids)
    assert len(tail) == len(ids) - round(0.8 * len(ids))
    # the split file is sorted by class; the slices are not
    for part in (head, tail):
        assert {i.split("-")[0] for i in part} == {"kangaroo", "raccoon"}
    assert read_split(CRITTERS, "train[0%:100%]") == ids
    with pytest.raises(ValueError, match="a < b"):
        read_split(CRITTERS, "train[80%:20%]")
    with pytest.raises(ValueError, match="no split file"):
        read_split(CRITTERS, "test[:50%]")


def test_image_level_label_is_the_largest_object(tmp_path):
    root = make_voc(
        tmp_path,
        {
            "a": [("cat", 0, (1, 1, 50, 50)), ("dog", 0, (1, 1, 200, 150))],  # dog is larger
            "b": [("cat", 0, (1, 1, 100, 100)), ("dog", 1, (1, 1, 300, 200))],  # difficult dog ignored
            "c": [("dog", 1, (1, 1, 10, 10))],  # only difficult objects: still labelled
            "d": [],  # no objects: left out
        },
    )
    samples, classes = image_level_samples(root, "train")
    assert classes == ["cat", "dog"]
    assert [(p.name, y) for p, y in samples] == [("a.jpg", 1), ("b.jpg", 0), ("c.jpg", 1)]
    with pytest.raises(ValueError, match="not among"):
        image_level_samples(root, "train", ["cat"])


def test_voc_labels_use_the_safe_reader(tmp_path):
    root = make_voc(tmp_path / "ok", {"a": [("cat", 0, (1, 1, 9, 9)), ("dog", 1, (1, 1, 9, 9))]})
    _, labels, classes = read_voc_labels(root, "train")
    assert classes == ["cat", "dog"] and labels.tolist() == [[1, 0]]
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]>'
    root = make_voc(tmp_path / "bad", {"a": [("cat", 0, (1, 1, 9, 9))]}, prefix=bomb)
    with pytest.raises(ValueError, match="DOCTYPE"):
        read_voc_labels(root, "train")


def _pass(boxes: list, scores: list, image_post: list) -> tuple:
    b = torch.tensor(boxes, dtype=torch.float32)[:, None, :]  # SCR: one box per position
    post = torch.tensor([[s, 1 - s] for s in scores])
    return ("scr", b, post, torch.tensor(image_post))


def test_tuning_finds_the_merge_that_is_right():
    # ground truth (100, 100, 200, 200). At Q=256 two windows each see half the animal: each box
    # alone has IoU 0.43 (wrong), their mean is exact. Their IoU is 0.11 (no IoU merge in the
    # grid joins them); centre distance 80 / mean size 100 = 0.8 (centre <= 1.0 or 2.0 joins them).
    # At Q=384 the one box is far off, so every --scales 384 row must be wrong.
    ev = Evidence(
        (300, 300),
        {
            (0, 256, False): _pass([[60, 100, 160, 200], [140, 100, 240, 200]], [0.6, 0.5], [0.8, 0.2]),
            (0, 384, False): _pass([[0, 0, 50, 50]], [0.9], [0.8, 0.2]),
        },
    )
    anns = [VocAnnotation("x", "x.jpg", 300, 300, objects=[VocObject("cat", (100.0, 100.0, 200.0, 200.0))])]
    rows = score_grid({"x": ev}, anns, ["cat", "dog"], candidates([[256], [384]], [False]), [False])
    assert len(rows) == 24
    right = {r["flags"] for r in rows if r["top1"] == 0}
    assert right == {
        f"--scales 256 --measure centre --threshold {t} --average {a}"
        for t in (1.0, 2.0)
        for a in ("count", "score")
    }
    assert rows[0]["flags"] in right and rows[0]["top2"] == 0
    assert all(r["top1"] == 1 for r in rows if "--scales 384" in r["flags"])


def test_train_on_voc_image_labels_then_localize_and_tune(tmp_path, capsys):
    """`verydeep train` on a VOC tree gives the classifier the localisation protocol uses."""
    if not CRITTERS.is_dir():
        pytest.skip(f"real data absent: {CRITTERS}")
    from verydeep.cli import main

    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = ["kangaroo-00001", "kangaroo-00002", "kangaroo-00003", "raccoon-1", "raccoon-150", "raccoon-2"]
    for i in ids:
        (root / "Annotations" / f"{i}.xml").symlink_to(CRITTERS / "Annotations" / f"{i}.xml")
        (root / "JPEGImages" / f"{i}.jpg").symlink_to(CRITTERS / "JPEGImages" / f"{i}.jpg")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids[::2]) + "\n")
    run = tmp_path / "run"
    sets = [f"data.root={root}", "data.dataset=voc", "data.train_split=train[:60%]", "data.test_split=val"]
    sets += ["model.arch=A", "model.width_mult=0.125", "model.fc_width=32", "model.crop_size=32"]
    sets += ["data.scale=[256]", "data.workers=0", "data.val_fraction=0", "optim.batch_size=2"]
    sets += ["train.epochs=1", f"train.out_dir={run}", "data.normalize=standardize"]
    assert main(["train", "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0
    out, err = capsys.readouterr()
    assert "test top-1 error" in out and "test top-1 error" not in err  # once (issue 18, item 11)
    cls = run / "checkpoints" / "best.safetensors"
    loc = str(tmp_path / "loc.safetensors")
    args = ["--data", str(root), "--init", str(cls), "--out", loc, "--steps", "2", "--split", "train[:60%]"]
    assert main(["localize", "train", *args]) == 0
    out = tmp_path / "tune.json"
    tune = ["--data", str(root), "--split", "train[60%:]", "--loc", loc, "--cls", str(cls)]
    assert main(["localize", "tune", *tune, "--scale-sets", "256;256,384", "--json", str(out)]) == 0
    assert "best: --scales" in capsys.readouterr().out
    import json

    r = json.loads(out.read_text())
    assert r["images"] == 2 and len(r["rows"]) == 24
    assert r["best"]["top1"] == min(row["top1"] for row in r["rows"])
    assert np.isfinite([row["top2"] for row in r["rows"]]).all()


def test_the_localisation_report_chooses_on_held_out_photographs_never_on_val():
    """study/loc_report.py: the lowest train[80%:] error wins (every tie is marked), whatever val
    says; a candidate without its val summary is none."""
    from verydeep.study.loc_report import render_block
    from verydeep.study.loc_study import LocSpec

    spec = LocSpec(
        data="voc",
        classifiers=[{"name": "c"}],
        runs=[{"name": "a", "classifier": "c", "nets": ["scr-all", "pcr-fc", "scr-fc"]}],
        fusions=[{"name": "b", "sets": {"both": ["a/scr-all", "a/pcr-fc"]}}],
        compare=["a"],
    )
    base = {
        "whole/gt_class": 0.6,
        "whole/classifier_class": 0.7,
        "mean/gt_class": 0.8,
        "mean/classifier_class": 0.9,
    }

    def pair(held, val):
        tune = {"best": {"flags": "", "top1": held}, "images": 58}
        return {"tune": tune, "val": {"images": 73, "dense": {"top1": val, "top2": val}, "baselines": base}}

    results = {"a/scr-all": pair(0.30, 0.50), "a/pcr-fc": pair(0.40, 0.10), "b/both": pair(0.30, 0.45)}
    block = render_block(spec, results, "cmd")
    rows = [line for line in block.splitlines() if line.startswith(("| a ", "| b "))]
    assert rows == [
        "| a | SCR, all layers **(chosen)** | 30.0 | 50.0 |",
        "| b | fusion of a: scr-all + pcr-fc **(chosen)** | 30.0 | 45.0 |",
        "| a | PCR, FC only | 40.0 | 10.0 |",
    ]
    assert "among 3 candidates" in block and "| **the choice** | **50.0%** (top-2 50.0%) |" in block
    assert "| the whole photograph as the box, classifier's class | 70.0% |" in block
    assert "| a: its choice, SCR, all layers | 50.0% |" in block  # run a's candidates alone
    r = scipy.stats.pearsonr([0.30, 0.30, 0.40], [0.50, 0.45, 0.10]).statistic
    assert f"(Pearson r = {r:.2f})" in block and "the 1 next within 5 photographs" in block
