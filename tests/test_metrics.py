"""Error rates, per-class accuracy and confusion matrices against scikit-learn."""

from __future__ import annotations

import pytest
import torch

from verydeep.evaluation.metrics import classification_metrics, format_csv, format_table, topk_error

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the oracle (pip install scikit-learn)")


def test_metrics_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(60, 7, generator=g).softmax(1)
    labels = torch.randint(0, 6, (60,), generator=g)  # class 6 never occurs
    m = classification_metrics(probs, labels)
    for k, key in ((1, "top1_err"), (5, "top5_err")):
        acc = sk.top_k_accuracy_score(labels.numpy(), probs.numpy(), k=k, labels=list(range(7)))
        assert m[key] == pytest.approx(100 * (1 - acc))
    conf = sk.confusion_matrix(labels.numpy(), probs.argmax(1).numpy(), labels=list(range(7)))
    assert m["confusion"] == conf.tolist()
    recall = sk.recall_score(labels.numpy(), probs.argmax(1).numpy(), labels=list(range(6)), average=None)
    assert m["per_class_acc"][:6] == pytest.approx(recall.tolist())
    assert m["per_class_acc"][6] is None and m["k"] == 5


def test_top5_is_clipped_to_the_number_of_classes():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert topk_error(probs, torch.tensor([0, 0]), 5) == 0.0
    assert topk_error(probs, torch.tensor([0, 0]), 1) == 50.0


def test_table_and_csv_layout():
    row = {"net": "D", "method": "dense", "arch": "D", "train_scale": "256-512", "test_scales": "256,384,512"}
    row |= {
        "n": 10,
        "top1_err": 24.81,
        "top5_err": 7.5,
        "k": 5,
        "images_per_s": 3.2,
        "forwards_per_image": 6.0,
    }
    row |= {"seconds": 3.1}
    text = format_table([row], ["dense", "multicrop"])
    assert "24.8/7.5" in text and "3.2, 6" in text and " -" in text
    lines = format_csv([row]).splitlines()
    assert lines[0].startswith("net,method,arch") and lines[1].startswith("D,dense,D,256-512")
