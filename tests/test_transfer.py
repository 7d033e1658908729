"""SVMs and metrics: hand-computed AP and recall, scikit-learn as oracle, an end-to-end run on real photos."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score

from verydeep.caltech import caltech_splits
from verydeep.cli import main
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import Meta, save_model
from verydeep.io.features import Descriptors, load_descriptors
from verydeep.models.init import init_weights
from verydeep.models.vgg import VGG
from verydeep.transfer import (
    SVMConfig,
    average_precision,
    fit_ovr,
    holdout_split,
    mean_average_precision,
    mean_class_recall,
)
from verydeep.transfer_protocol import run_transfer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_thread")


# --- AP ---------------------------------------------------------------------------------------
def test_ap_hand_computed_interpolation_matters():
    # ranking P N P: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    s, y = np.array([3.0, 2.0, 1.0]), np.array([1, -1, 1])
    assert average_precision(s, y, "raw") == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(s, y, "area") == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # 11-point: t in {0..0.5} -> 1 (six points); t in {0.6..1} -> 2/3 (five points)
    assert average_precision(s, y, "voc07") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_ap_hand_computed_interpolation_raises_precision():
    # N P N P P: precisions at the positives 1/2, 2/4, 3/5; interpolated: 3/5 everywhere
    s, y = np.array([5.0, 4, 3, 2, 1]), np.array([-1, 1, -1, 1, 1])
    assert average_precision(s, y, "raw") == pytest.approx((0.5 + 0.5 + 0.6) / 3)
    assert average_precision(s, y, "area") == pytest.approx(0.6)
    assert average_precision(s, y, "voc07") == pytest.approx(0.6)


def test_ap_ties_difficult_and_no_positives():
    assert average_precision(np.array([0.5, 0.5]), np.array([1, -1]), "area") == pytest.approx(0.5)
    # a difficult (0) image is ignored wherever it ranks
    s = np.array([9.0, 3.0, 2.0, 1.0])
    assert average_precision(s, np.array([0, 1, -1, 1]), "raw") == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(s, np.array([-1, -1, 0, -1])))
    m, per = mean_average_precision(np.c_[s, s], np.c_[[1, -1, -1, -1], [-1, -1, -1, -1]])
    assert m == 1.0 and np.isnan(per[1])  # classes without positives do not count


@pytest.mark.parametrize("seed", range(5))
def test_raw_ap_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.3
    scores = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    want = average_precision_score(y, scores)
    assert average_precision(scores, y, "raw") == pytest.approx(want)
    assert average_precision(scores, y, "area") >= want - 1e-12  # interpolation only raises precision


# --- class recall -----------------------------------------------------------------------------
def test_mean_class_recall_hand_and_sklearn():
    y, p = np.array([0, 0, 0, 1, 2, 2]), np.array([0, 1, 0, 1, 0, 2])
    m, per = mean_class_recall(y, p)
    assert per == pytest.approx([2 / 3, 1.0, 0.5]) and m == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    assert mean_class_recall(y, p, 7)[0] == pytest.approx(balanced_accuracy_score(y, p))


# --- splits and SVMs --------------------------------------------------------------------------
def test_caltech_splits():
    labels = np.repeat([0, 1, 2], [10, 12, 8])
    splits = caltech_splits(labels, n_train=5, n_test=4, n_splits=3, seed=0)
    assert len(splits) == 3
    for tr, te in splits:
        assert set(tr).isdisjoint(te)
        assert np.bincount(labels[tr]).tolist() == [5, 5, 5]
        assert np.bincount(labels[te]).tolist() == [4, 4, 3]  # up to 4 of the rest
    assert not np.array_equal(splits[0][0], splits[1][0])
    with pytest.raises(ValueError, match="lower the training images"):
        caltech_splits(labels, n_train=8, n_test=None, n_splits=1)


def test_holdout_split_is_stratified():
    labels = np.repeat([0, 1], [20, 4])
    fit, val = holdout_split(labels, 0.25, seed=0)
    assert np.bincount(labels[val]).tolist() == [5, 1] and len(fit) + len(val) == 24
    assert set(fit).isdisjoint(val)


def blobs(n_per: int, k: int, seed: int, sep: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 8)) * sep
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(len(y), 8))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_separable_data_gets_perfect_scores():
    x, y = blobs(20, 3, seed=0, sep=6.0)
    xt, yt = blobs(10, 3, seed=0, sep=6.0)
    train = Descriptors(x, y, [str(i) for i in range(len(y))], ["a", "b", "c"])
    test = Descriptors(xt, yt, [str(i) for i in range(len(yt))], ["a", "b", "c"])
    r = run_transfer(train, test, SVMConfig())
    assert r["value"] == 1.0 and r["C"] in SVMConfig().cs and len(r["held_out"]) == 5
    # multi-label view of the same data: every AP is 1
    ml = lambda d: Descriptors(d.features, np.where(np.eye(3)[d.labels] > 0, 1, -1), d.paths, d.classes)  # noqa: E731
    assert run_transfer(ml(train), ml(test), SVMConfig(ap="voc07"))["value"] == 1.0
    c = run_transfer(train, None, SVMConfig(), n_train=10, n_splits=3)
    assert c["value"] == 1.0 and c["std"] == 0.0 and len(c["splits"]) == 3


def test_difficult_rows_are_left_out_of_training():
    x, y = blobs(15, 2, seed=1)
    targets = np.where(y[:, None] == np.array([[0, 1]]), 1, -1).astype(np.int8)
    cfg = SVMConfig()
    w_ref, b_ref = fit_ovr(x, targets, 1.0, cfg)
    x2 = np.vstack([x, 100 * np.ones((1, 8))])  # an outlier marked difficult for both classes
    t2 = np.vstack([targets, [[0, 0]]]).astype(np.int8)
    w, b = fit_ovr(x2, t2, 1.0, cfg)
    np.testing.assert_allclose(w, w_ref, atol=1e-6)
    np.testing.assert_allclose(b, b_ref, atol=1e-6)


# --- end to end on real photographs ------------------------------------------------------------
needs_data = pytest.mark.skipif(
    not (DATA / "critters-voc").is_dir(), reason=f"{DATA} (shared real data) absent"
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=32, crop_size=32)
    init_weights(net, "kaiming")
    path = tmp_path_factory.mktemp("ckpt") / "net.safetensors"
    save_model(path, net, Meta(preprocess=Preprocess.preset("paper", mean=(120, 115, 100)).to_dict()))
    return str(path)


@needs_data
def test_end_to_end_voc_map(tiny_checkpoint, tmp_path, capsys):
    root = str(DATA / "critters-voc")
    files = {s: str(tmp_path / f"{s}.safetensors") for s in ("train", "val")}
    for split, out in files.items():
        args = ["features", tiny_checkpoint, root, "--split", split, "--out", out, "--batch-size", "64"]
        assert main([*args, "--scales", "256", "384", "--combine", "average", "--threads", "1"]) == 0
    assert load_descriptors(files["val"]).labels.shape == (73, 2)
    args = ["transfer", files["train"], files["val"], "--ap", "voc07", "--json", str(tmp_path / "r.json")]
    assert main([*args, "--pr-curves", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["metric"] == "mAP (voc07)" and 0.5 < r["value"] <= 1  # two balanced classes: chance is ~0.5
    assert "mAP (voc07)" in capsys.readouterr().out
    assert isinstance(r["C"], list) and len(r["C"]) == 2  # a C per class
    for name, pr in zip(r["classes"], r["pr"], strict=True):  # a precision-recall PNG per class
        assert (tmp_path / f"pr-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pr["recall"][-1] == 1.0 and len(pr["precision"]) == len(pr["recall"])


@needs_data
def test_end_to_end_caltech_recall(tiny_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "val.npz")
    args = ["features", tiny_checkpoint, str(DATA / "hymenoptera"), "--split", "val", "--out", out]
    assert main([*args, "--scales", "256", "320", "--combine", "stack", "--threads", "1"]) == 0
    d = load_descriptors(out)
    assert d.features.shape == (153, 64) and d.classes == ["ants", "bees"]
    assert main(["transfer", out, "--per-class", "30", "--test-per-class", "30", "--splits", "2"]) == 0
    assert "over 2 splits of 30 training images per class" in capsys.readouterr().out
    assert main(["transfer", out]) == 2  # multi-class without a test file needs --per-class


def test_caltech_protocols_counts_and_metric_against_scikit_learn(tmp_path, capsys):
    """Issue 16, item 3: the paper's Caltech splits (30 train / up to 50 test per class; 60 train
    / the rest), three of them, the background class dropped on request, and the mean class
    recall equal to scikit-learn's balanced accuracy on each split."""
    from verydeep.caltech import PROTOCOLS, drop_classes
    from verydeep.io.features import save_descriptors
    from verydeep.transfer import binary_targets, score

    rng = np.random.default_rng(0)
    sizes = {"BACKGROUND_Google": 90, "ant": 70, "bee": 95, "cat": 100}  # a small Caltech-like set
    classes = sorted(sizes)
    labels = np.concatenate([np.full(n, classes.index(c)) for c, n in sizes.items()])
    centres = rng.normal(size=(len(classes), 16))
    x = centres[labels] + rng.normal(scale=1.2, size=(len(labels), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = Descriptors(x, labels, [f"{i}.jpg" for i in range(len(labels))], classes)
    p101 = PROTOCOLS["caltech101"]
    splits = caltech_splits(d.labels, p101["n_train"], p101["n_test"], p101["n_splits"], seed=0)
    assert len(splits) == 3
    for tr, te in splits:
        assert set(tr).isdisjoint(te) and np.bincount(d.labels[tr]).tolist() == [30] * 4
        want = [min(50, sizes[c] - 30) for c in classes]  # up to 50 of the rest
        assert np.bincount(d.labels[te]).tolist() == want
    tr, te = caltech_splits(d.labels, 60, None, 1, seed=0)[0]  # caltech256: the rest for testing
    assert np.bincount(d.labels[te]).tolist() == [sizes[c] - 60 for c in classes]
    cfg = SVMConfig()
    model = fit_ovr(d.features[tr], binary_targets(d.labels[tr], 4), 1.0, cfg)
    pred = score(d.features[te], model).argmax(1)
    assert mean_class_recall(d.labels[te], pred, 4)[0] == pytest.approx(
        balanced_accuracy_score(d.labels[te], pred)
    )
    kept = drop_classes(d, ["BACKGROUND_Google"])
    assert kept.classes == ["ant", "bee", "cat"] and len(kept.labels) == 265 and kept.labels.max() == 2
    save_descriptors(tmp_path / "c.npz", d)
    args = [
        "transfer",
        str(tmp_path / "c.npz"),
        "--protocol",
        "caltech101",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main([*args, "--drop-class", "BACKGROUND_Google"]) == 0
    out = capsys.readouterr().out
    assert "over 3 splits of 30 training images per class" in out and "BACKGROUND_Google" not in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert len(r["splits"]) == 3 and r["classes"] == ["ant", "bee", "cat"] and r["std"] >= 0
    assert (
        main(["transfer", str(tmp_path / "c.npz"), "--drop-class", "nope", "--protocol", "caltech101"]) == 2
    )


def test_cross_validation_folds_are_stratified_partitions():
    from verydeep.transfer import cv_folds

    labels = np.repeat([0, 1, 2], [9, 6, 12])
    folds = cv_folds(labels, 3, seed=0)
    assert sorted(np.concatenate([val for _, val in folds]).tolist()) == list(range(27))
    for fit, val in folds:
        assert set(fit).isdisjoint(val) and np.bincount(labels[val]).tolist() == [3, 2, 4]


def test_a_c_per_class_chosen_by_cross_validation_matches_scikit_learn():
    """Issue 16, item 2: each class its own C, by the mean over folds of that class's AP, with
    scikit-learn's LinearSVC and average_precision_score as the oracle ("raw" AP is sklearn's)."""
    from sklearn.svm import LinearSVC

    from verydeep.transfer import cv_folds, select_c

    rng = np.random.default_rng(1)
    n, dim = 90, 12
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.where(rng.random((n, 3)) < 0.5, 1, -1)
    labels[:, 0] = np.where(x[:, 0] > 0, 1, -1)  # an easy class
    labels[:, 1] = np.where(x[:, 1] + 0.8 * rng.normal(size=n) > 0, 1, -1)  # a noisy one
    cfg = SVMConfig(cs=(0.01, 1.0, 100.0), ap="raw", folds=3)
    best, _, cv = select_c(x, labels, 3, cfg)
    assert isinstance(best, list) and len(best) == 3
    want, want_cv = [], []
    for j in range(3):
        mean_ap = {}
        for c in cfg.cs:
            aps = []
            for fit, val in cv_folds(labels, 3, cfg.seed):
                svm = LinearSVC(C=c, max_iter=10000).fit(x[fit], labels[fit, j] > 0)
                aps.append(average_precision_score(labels[val, j] > 0, svm.decision_function(x[val])))
            mean_ap[c] = np.mean(aps)
        want.append(max(cfg.cs, key=lambda c, m=mean_ap: (round(m[c], 9), -c)))
        want_cv.append(mean_ap[want[-1]])
    assert best == want
    assert cv == pytest.approx(np.mean(want_cv))  # the chosen Cs' cross-validated mean AP
    one, held_out, cv_one = select_c(x, labels, 3, SVMConfig(cs=cfg.cs, ap="raw", per_class_c=False))
    assert isinstance(one, float) and one in cfg.cs
    assert (
        cv_one == held_out[one] == max(held_out.values()) < cv
    )  # one C for all: lower than one per class here


def test_the_transfer_report_chooses_the_descriptor_by_training_cross_validation():
    """study/transfer_report.py: per net, the descriptor with the best training-split cv, never
    the best test value; an older summary's cv is its one C's held-out entry; '-' where unknown."""
    from verydeep.study.transfer_report import chosen, cv_score, render_block
    from verydeep.study.transfer_study import TransferSpec

    spec = TransferSpec(
        sources=[
            {"name": "S", "checkpoint": "s", "descriptors": ["a", "b", "c"], "datasets": ["h"]},
            {"name": "P", "checkpoint": "s", "descriptors": ["b"], "datasets": ["h"], "layer": "pool3"},
        ],
        descriptors={d: {"scales": [256]} for d in "abc"},
        datasets=[{"name": "h", "root": "r", "protocols": ["recall"]}],
        table=["S"],
        table_descriptor="a",
        choose_from=["a", "b", "c"],
    )
    results = {  # (test, cv): b has the best cv, c the best test value
        "S/trained/h-a-recall": {"value": 0.60, "cv": 0.70},
        "S/trained/h-b-recall": {"value": 0.74, "C": 1.0, "held_out": {"0.1": 0.9, "1.0": 0.75}},
        "S/trained/h-c-recall": {"value": 0.80, "cv": 0.60},
        "S/twin/h-a-recall": {"value": 0.5, "C": [1.0, 10.0], "held_out": {"1.0": 0.9}},  # one C per class
        "P/trained/h-b-recall": {"value": 0.7},
        "P/twin/h-b-recall": {"value": 0.6},
    }
    assert cv_score(results["S/trained/h-b-recall"]) == 0.75  # the chosen C's entry, not the max
    assert chosen(spec, results, spec.sources[0], "trained", "h") == "74.0 (b)"
    assert chosen(spec, results, spec.sources[0], "twin", "h") == "-"
    block = render_block(spec, results, "cmd")
    assert "| S | **60.0** / 50.0 |" in block and "| S | 74.0 (b) / - |" in block
    assert "| source | b |" in block and "| P (h recall) | **70.0** / 60.0 |" in block  # the other sources


def _pair_files(tmp_path, **test_changes) -> tuple[str, str]:
    """Two small multi-class descriptor files (fc7, 8-D, 2 classes x 6); ``test_changes`` alters
    the test file: ``features``, ``labels`` or descriptor ``info`` entries."""
    from verydeep.io.features import save_descriptors

    x, y = blobs(6, 2, seed=0)
    info = {"descriptor": {"layer": "fc7", "scales": [384.0], "combine": "average"}}
    paths, classes = [f"{i}.jpg" for i in range(len(y))], ["ants", "bees"]
    save_descriptors(tmp_path / "tr.safetensors", Descriptors(x, y, paths, classes, info))
    test = {"features": x, "labels": y} | {k: v for k, v in test_changes.items() if k != "info"}
    test_info = {"descriptor": info["descriptor"] | test_changes.get("info", {})}
    n = len(test["labels"])
    d = Descriptors(test["features"], test["labels"], paths[:n], classes, test_info)
    save_descriptors(tmp_path / "te.safetensors", d)
    return str(tmp_path / "tr.safetensors"), str(tmp_path / "te.safetensors")


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"features": np.zeros((12, 16), np.float32)}, "8-D; test ones multiclass, 16-D"),
        ({"info": {"layer": "fc6"}}, "made differently: layer fc7 against fc6"),
        ({"info": {"scales": [256.0, 384.0]}}, "made differently: scales"),
    ],
)
def test_train_and_test_descriptors_must_match_before_any_svm(tmp_path, capsys, change, needle):
    # a 16-D against a 32-D file used to fail inside numpy after the whole C search; another layer
    # or other scales (same dimension) used to give a number
    train, test = _pair_files(tmp_path, **change)
    assert main(["transfer", train, test]) == 2
    assert needle in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "labels, features, needle",
    [
        (np.array([], dtype=np.int64), np.zeros((0, 4), np.float32), "no descriptors (0 images)"),
        (np.array([0, 7]), np.zeros((2, 4), np.float32), "labels outside [0, 2)"),
        (np.array([0, 1]), np.array([[0, 0, 0, np.nan], [1, 1, 1, 1]], np.float32), "NaN or inf"),
    ],
)
def test_a_descriptor_file_that_cannot_be_scored_is_refused(labels, features, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        Descriptors(features, labels, [f"{i}.jpg" for i in range(len(labels))], ["ants", "bees"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--per-class", "1", "--folds", "0"],
            "1 training image(s) per class: choosing C by a held-out part",
        ),
        (
            ["--per-class", "2"],
            "2 training image(s) per class: choosing C by 3-fold cross-validation needs at least 3",
        ),
        (["--per-class", "2", "--drop-class", "ants", "--drop-class", "bees"], "leaves 0 class(es)"),
    ],
)
def test_caltech_splits_too_small_to_choose_c_are_one_line(tmp_path, capsys, args, needle):
    # these raised IndexError, or printed 30 lines of numpy warnings and a recall from empty folds
    train, _ = _pair_files(tmp_path)
    assert main(["transfer", train, *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Warning" not in err, err
    assert needle in err.strip().splitlines()[-1], err


@pytest.mark.parametrize(
    "multilabel, args, needle",
    [
        (
            True,
            ["--per-class", "3", "--splits", "2"],
            "--per-class, --splits have no effect here: the descriptor files are multi-label",
        ),
        (True, ["--protocol", "caltech101"], "--protocol has no effect here"),
        (
            False,
            ["--pr-curves", "{tmp}/pr"],
            "--pr-curves has no effect here: the descriptor files are single-label",
        ),
        (False, ["--one-c", "--ap", "area"], "--one-c, --ap have no effect here"),
        (False, ["--splits", "5"], "(give --per-class or --protocol for Caltech splits)"),
        (False, ["--val-fraction", "0.3"], "--val-fraction holds out a part with --folds 0 only"),
        (True, ["--val-fraction", "0.3", "--folds", "2"], "here 2 folds choose C"),
    ],
)
def test_a_flag_the_task_never_reads_is_refused(tmp_path, capsys, multilabel, args, needle):
    # each was ignored without a word: Caltech splits asked of VOC files scored the whole split
    from verydeep.io.features import save_descriptors

    x, y = blobs(6, 2, seed=0)
    labels = np.where(np.eye(2)[y] > 0, 1, -1) if multilabel else y  # VOC: +1 / -1 per class
    files = [str(tmp_path / f"{s}.safetensors") for s in ("tr", "te")]
    for f in files:
        save_descriptors(f, Descriptors(x, labels, [f"{i}.jpg" for i in range(len(y))], ["ants", "bees"]))
    assert (
        main(
            ["transfer", *files, "--json", str(tmp_path / "r.json"), *[a.format(tmp=tmp_path) for a in args]]
        )
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "pr").exists()
    kept = ["--folds", "2"] if "--folds" in args else []  # the same files without the flags are scored
    assert main(["transfer", *files, *kept]) == 0
