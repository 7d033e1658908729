"""``verydeep eval`` / ``predict`` end to end on real photographs and on Fashion-MNIST."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from verydeep.cli import main
from verydeep.data.fashion_mnist import DEFAULT_ROOT
from verydeep.data.images import load_image
from verydeep.evaluation import EvalOptions, evaluate_models, open_data
from verydeep.evaluation.predict import image_posteriors
from verydeep.io.checkpoint import Meta, save_model
from verydeep.models.vgg import VGG

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_nets import PREP, trained_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HYM = DATA / "hymenoptera"
needs_hym = pytest.mark.skipif(not HYM.is_dir(), reason=f"real photographs not found at {HYM}")
needs_fm = pytest.mark.skipif(
    not Path(DEFAULT_ROOT).is_dir(), reason="Fashion-MNIST absent (apt-get install dataset-fashion-mnist)"
)
GIF = HYM / "train" / "ants" / "imageNotFound.gif"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(
        path,
        trained_tiny(classes=2),
        Meta(classes=["ants", "bees"], train_scale=[256], preprocess=PREP.to_dict()),
    )
    return path


@needs_hym
def test_eval_end_to_end_on_real_photographs(ckpt, tmp_path, capsys):
    root = tmp_path / "val"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for p in sorted((HYM / "val" / cls).glob("*.jpg"))[:5]:
            (root / cls / p.name).symlink_to(p)
    (root / "ants" / GIF.name).symlink_to(GIF)  # the palette image
    (root / "bees" / "broken.jpg").write_bytes(b"not a jpeg")  # skipped, counted
    methods = "centre,dense,multicrop,dense+multicrop"
    other = tmp_path / "other.safetensors"  # the same file twice is refused: a second net
    save_model(
        other,
        trained_tiny(classes=2, seed=1),
        Meta(classes=["ants", "bees"], train_scale=[256], preprocess=PREP.to_dict()),
    )
    args = ["eval", str(ckpt), str(other), "--data", str(root), "--method", methods, "--workers", "0"]
    assert main([*args, "--json", "--csv", str(tmp_path / "r.csv"), "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_images"] == 11 and res["skipped"] == 1 and res["classes"] == ["ants", "bees"]
    rows = {(r["net"], r["method"]): r for r in res["rows"]}
    assert len(rows) == 12  # two nets + their ensemble, 4 methods each
    ens = rows[("ensemble of 2", "dense+multicrop")]
    single = next(r for (n, m), r in rows.items() if m == "dense+multicrop" and n != "ensemble of 2")
    assert ens["forwards_per_image"] == 2 * single["forwards_per_image"] == 2 * 156
    assert sum(map(sum, ens["confusion"])) == 11
    assert sum(map(sum, single["confusion"])) == 11 and single["k"] == 2
    with open(tmp_path / "r.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 12
    assert main([*args[:2], "--data", str(root), "--workers", "0", "--scales", "single"]) == 0
    out = capsys.readouterr().out
    assert "top-1/top-5 error" in out and "forward passes per image" in out and "256" in out


def test_eval_cli_reports_user_errors_in_one_line(ckpt, tmp_path, capsys):
    (tmp_path / "ants").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "ants" / "a.png")
    assert main(["eval", str(ckpt), "--data", str(tmp_path), "--method", "densest"]) == 2
    assert main(["eval", str(ckpt), "--data", str(tmp_path), "--scales", "256", "--workers", "0"]) == 0
    # Q below the crop (224 paper units) used to run at Q = 224 and report the Q asked for
    with pytest.raises(SystemExit) as e:
        main(["eval", str(ckpt), "--data", str(tmp_path), "--scales", "100", "--workers", "0"])
    assert e.value.code == 2
    (tmp_path / "wasps").mkdir()
    assert main(["eval", str(ckpt), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "unknown method" in err[0] and "must be >= 224 paper units" in err[1]
    assert "wasps" in err[2]


@needs_hym
def test_predict_real_photographs_of_every_mode(ckpt, tmp_path, capsys):
    src = sorted((HYM / "val" / "bees").glob("*.jpg"))[0]
    rgb = Image.open(src).convert("RGB")
    files = {"jpeg": tmp_path / "rgb.jpg", "png": tmp_path / "rgb.png", "grey": tmp_path / "grey.jpg"}
    rgb.save(files["jpeg"], quality=95)
    rgb.save(files["png"])
    rgb.convert("L").save(files["grey"], quality=95)
    files["cmyk"] = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(files["cmyk"], quality=95)
    files["gif"] = GIF
    heat = tmp_path / "heat.png"
    argv = ["predict", "-m", str(ckpt), *map(str, files.values()), "--json", "--heatmap", str(heat)]
    assert main(argv) == 0
    out = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert [out[f.name]["mode"] for f in files.values()] == ["RGB", "RGB", "L", "CMYK", "P"]
    for r in out.values():
        assert [t["class"] for t in r["top"]] in (["ants", "bees"], ["bees", "ants"])  # top-5 clipped
        assert sum(t["prob"] for t in r["top"]) == pytest.approx(1.0, abs=1e-5)

    def probs(name):
        return {t["class"]: t["prob"] for t in out[name]["top"]}

    net, meta = trained_tiny(classes=2), Meta(classes=["ants", "bees"], preprocess=PREP.to_dict())
    expect = image_posteriors(net, meta, rgb)  # the PNG is lossless: exactly the source photo
    assert probs("rgb.png")["bees"] == pytest.approx(float(expect[1]), abs=1e-5)
    # CMYK is converted back to the same photograph (within JPEG loss)
    assert abs(probs("cmyk.jpg")["bees"] - probs("rgb.jpg")["bees"]) < 0.02
    grey = load_image(files["grey"])
    assert grey.mode == "RGB" and len(set(grey.getpixel((7, 9)))) == 1
    with Image.open(heat) as im:
        assert im.width > 300 and im.height > 5 * 200 and len(im.convert("RGB").getcolors(2**20)) > 1000


@needs_fm
def test_fashion_mnist_grey_nets_and_rgb_nets(tmp_path, capsys):
    data = open_data("fashion-mnist")
    torch.manual_seed(0)
    grey_net = VGG("A", num_classes=10, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32)
    rgb_net = VGG("A", num_classes=10, width_mult=0.125, fc_width=16, crop_size=32)
    m1 = Meta(
        classes=data.classes, preprocess={"mean": [72.9], "std": [1.0], "pixel_range": 255.0, "bgr": False}
    )
    m3 = Meta(classes=data.classes)
    opts = EvalOptions(methods=["dense", "multicrop"], workers=0, progress=False, limit=40)
    res = evaluate_models([("g", grey_net, m1), ("c", rgb_net, m3)], data, opts)
    assert res["n_images"] == 40 and len(res["rows"]) == 6
    replicated = data.subset(40)
    replicated.images = replicated.images.repeat(1, 3, 1, 1)
    res3 = evaluate_models([("c", rgb_net, m3)], replicated, opts)
    torch.testing.assert_close(res3["posteriors"][("c", "dense")], res["posteriors"][("c", "dense")])
    path = tmp_path / "fm.safetensors"
    save_model(path, grey_net, m1)
    assert main(["eval", str(path), "--data", "fashion-mnist", "--limit", "30", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["n"] == 30
