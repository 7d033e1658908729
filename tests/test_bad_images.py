"""Hostile and awkward image files: each converted correctly or skipped and counted, never a crash;
an all-bad micro-batch keeps gradient accumulation (and so DDP ranks) in step."""

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from verydeep.config import RunConfig
from verydeep.data.folder import ImageFolderDataset, collate_skip_bad
from verydeep.data.images import BadImageError, load_image
from verydeep.data.loaders import EpochOrder, FolderBatches
from verydeep.data.transforms import CentreCropTransform
from verydeep.engine import StepState, train_one_epoch
from verydeep.models.vgg import VGG
from verydeep.train import fit

sys.path.insert(0, str(Path(__file__).parent))  # tests run with --import-mode=importlib
from image_corpus import make_corpus, photo


def test_every_corpus_file_is_decoded_or_refused_as_the_policy_says(tmp_path, caplog):
    corpus = make_corpus(tmp_path)
    for name, want in corpus.items():
        t = time.perf_counter()
        if want == "bad":
            with pytest.raises(BadImageError, match=name.replace(".", r"\.")):
                load_image(tmp_path / name)
        else:
            img = load_image(tmp_path / name)
            assert img.mode == "RGB" and img.size == (48, 40), name
        assert time.perf_counter() - t < 2, f"{name}: too slow (a bomb must be refused from its header)"
    assert "truncated_tail.jpg: truncated JPEG decoded" in caplog.text


def test_conversions_match_independent_computations(tmp_path):
    make_corpus(tmp_path)
    ref = np.asarray(photo(), dtype=np.float64)
    rgb = lambda n: np.asarray(load_image(tmp_path / n), dtype=np.float64)  # noqa: E731
    assert np.abs(rgb("png_named.JPEG") - ref).max() == 0  # content decides, not the name
    assert np.abs(rgb("cmyk.jpg") - ref).mean() < 4  # Adobe-inverted CMYK read the right way up
    grey = np.asarray(photo().convert("L"), dtype=np.float64)
    assert np.abs(rgb("grey.png") - grey[..., None]).max() == 0
    grey16 = (np.arange(40 * 48).reshape(40, 48) * 30).astype(np.float64)
    assert np.abs(rgb("grey16.png")[..., 0] - np.round(grey16 / 65535 * 255)).max() <= 1  # rescaled
    over_white = (ref * 128 + 255 * 127) / 255  # alpha 128 composited over white
    assert np.abs(rgb("rgba.png") - over_white).max() <= 1.5


def test_dataset_skips_and_counts_bad_files_or_fails_with_one_line(tmp_path):
    corpus = make_corpus(tmp_path)
    samples = [(tmp_path / n, 0) for n in sorted(corpus)]
    n_bad = sum(v == "bad" for v in corpus.values())
    order = EpochOrder(len(samples), micro_batch=4, shuffle=False)
    batches = FolderBatches(ImageFolderDataset(samples, CentreCropTransform(32, 32)), order, 0, False)
    got = list(batches)
    assert len(got) == len(batches) == 6  # 22 files, micro-batch 4: no batch lost
    assert sum(len(y) for _, y in got) == len(samples) - n_bad and batches.bad_images == n_bad
    assert all(x.shape[1:] == (3, 32, 32) for x, _ in got)
    strict = ImageFolderDataset(samples, CentreCropTransform(32, 32), on_bad_image="fail")
    with pytest.raises(BadImageError) as e:  # through a worker process: still one line with the file
        list(FolderBatches(strict, EpochOrder(len(samples), 4, shuffle=False), 1, False))
    assert "\n" not in str(e.value) and tmp_path.name in str(e.value)


def test_all_bad_batch_is_an_empty_batch_of_the_right_shape():
    images, labels, _, bad = collate_skip_bad([None, None], shape=(3, 32, 32))
    assert images.shape == (0, 3, 32, 32) and len(labels) == 0 and bad == 2


def test_empty_micro_batch_keeps_accumulation_in_step():
    """[good, empty] with 2-step accumulation == [good] alone at half the learning rate."""
    torch.manual_seed(0)
    kw = dict(num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32, dropout=0)
    a, b = VGG("A", **kw), VGG("A", **kw)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 3, (4,))
    empty = (torch.empty(0, 1, 32, 32), torch.empty(0, dtype=torch.long))
    cpu, ident = torch.device("cpu"), lambda t: t
    sa, sb = StepState(), StepState()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.2), torch.optim.SGD(b.parameters(), lr=0.1)
    train_one_epoch(
        a, [(x, y), empty, empty, empty], opt_a, prepare=ident, device=cpu, state=sa, accum_steps=2
    )
    train_one_epoch(b, [(x, y)], opt_b, prepare=ident, device=cpu, state=sb)
    assert sa.global_step == 2 and sa.skipped_steps == 0  # the all-empty second step is a no-op
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def _folder(root, corpus_seed: int) -> int:
    """Two classes of 8 good photos each, plus the hostile corpus in the first: returns #bad."""
    for c in ("cats", "dogs"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(8):
            photo(40, 48, seed=i + 10 * (c == "dogs")).save(root / "train" / c / f"{i}.jpg")
    corpus = make_corpus(root / "train" / "cats", corpus_seed)
    return sum(v == "bad" for v in corpus.values())


def test_training_on_a_folder_with_bad_files_reports_them(tmp_path, caplog):
    n_bad = _folder(tmp_path / "data", 0)
    overrides = [
        "model.arch=A", "model.width_mult=0.125", "model.fc_width=16", "model.crop_size=32",
        "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}", "data.val_fraction=0",
        "data.workers=0", "optim.batch_size=4", "optim.micro_batch=1", "train.epochs=1",
        "train.precision=fp32", "train.device=cpu", "train.eval_test=false",
        f"train.out_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = fit(RunConfig.from_sources(overrides=overrides), progress=False)
    # 38 files, micro-batch 1, batch 4: 9 steps use 36 of them; the bad ones among those are counted
    assert result["global_step"] == 9 and 0 < result["bad_images"]["train"] <= n_bad
    assert result["bad_images"]["train"] == caplog.text.count("skipping bad image")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["bad_images"] == result["bad_images"]
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].endswith("bad_images") and log[1].endswith(f",{result['bad_images']['train']}")


def test_grey_folder_image_is_not_a_crash(tmp_path):
    Image.new("L", (40, 40), 90).save(tmp_path / "g.jpg")
    assert load_image(tmp_path / "g.jpg").getpixel((5, 5)) == (90, 90, 90)


def test_a_float_tiff_holding_nan_is_a_bad_image_in_every_command(tmp_path, capsys):
    """Issue 42, item 4: NaN pixels were cast to undefined bytes (numpy's 'invalid value
    encountered in cast'); now every reader skips the file and counts it, without a warning."""
    import warnings

    from verydeep.cli import main
    from verydeep.io.checkpoint import Meta, save_model

    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        photo(48, 40, seed=ord(c)).save(data / c / "good.jpg")
    corpus = make_corpus(tmp_path / "corpus")
    nan = data / "a" / "nan.tif"
    nan.write_bytes((tmp_path / "corpus" / "float_nan.tif").read_bytes())
    assert corpus["float_nan.tif"] == "bad"
    ck = tmp_path / "net.safetensors"
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(ck, net, Meta(classes=["a", "b"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's cast warning would fail here
        assert main(["predict", "-m", str(ck), str(nan), str(data / "b" / "good.jpg")]) == 1
        assert "nan.tif: 16 pixels are NaN or infinite" in capsys.readouterr().err
        assert main(["eval", str(ck), "--data", str(data), "--workers", "0"]) == 0
        assert "1 unreadable skipped" in capsys.readouterr().out
        assert main(["features", str(ck), str(data), "--out", str(tmp_path / "f.npz"), "--workers", "0"]) == 0
        assert "skipped 1" in capsys.readouterr().out
        assert main(["preresize", str(data), str(tmp_path / "small"), "--smallest-side", "36"]) == 0
        assert "bad 1" in capsys.readouterr().out
