"""``verydeep style``: the optimisation lowers Gatys et al.'s objective, is repeatable, and the
command writes a PNG of the asked size or says in one line why not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from verydeep.cli import main
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import Meta, save_model
from verydeep.losses import PerceptualLoss, StyleLoss
from verydeep.models.vgg import VGG
from verydeep.style import StyleConfig, stylise

pytestmark = pytest.mark.usefixtures("one_thread")
PREP = Preprocess((120.0, 115.0, 100.0), (60.0, 60.0, 60.0))
LAYERS = {"content_layers": {"relu2_2": 1.0}, "style_layers": {"relu1_1": 1.0, "relu2_1": 1.0}}


def tiny() -> VGG:
    torch.manual_seed(0)
    return VGG("E", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).eval()


def objective(net, x, content, style, cfg):
    c = PerceptualLoss(net, PREP, cfg.content_layers)(x, content)
    return float(cfg.content_weight * c + cfg.style_weight * StyleLoss(net, PREP, cfg.style_layers)(x, style))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_objective_falls(optimizer):
    net, content = tiny(), torch.rand(1, 3, 40, 48)
    style = torch.linspace(0, 1, 40 * 40 * 3).reshape(1, 3, 40, 40)  # stripes: a style unlike noise
    cfg = StyleConfig(steps=15, optimizer=optimizer, style_weight=1e3, normalize="none", **LAYERS)
    out = stylise(net, PREP, content, style, cfg)
    assert objective(net, out, content, style, cfg) < 0.7 * objective(net, content, content, style, cfg)
    assert out.min() >= 0 and out.max() <= 1 and out.shape == content.shape


def homogeneous() -> VGG:
    """tiny() without biases: a ReLU/max-pool net, so f(a x) = a f(x) for a > 0."""
    net = tiny()
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return net


@pytest.mark.parametrize("normalize", ["target", "none"])
def test_target_normalisation_makes_the_weights_scale_free(normalize):
    """The same net fed inputs 60x larger (std 1 instead of 60, as a Caffe net is fed 0-255
    pixels) has maps 60x and Grams 3600x larger: relative losses do not see it, raw ones do."""
    net, content = homogeneous(), torch.rand(1, 3, 40, 48)
    style = torch.linspace(0, 1, 40 * 40 * 3).reshape(1, 3, 40, 40)
    # 3 L-BFGS steps: further on, its line searches amplify the inputs' rounding differences
    # (the kernels round x and 60x differently) past 1e-3 on some CPUs, normalised or not
    cfg = StyleConfig(steps=3, style_weight=10.0, normalize=normalize, **LAYERS)
    small = stylise(net, PREP, content, style, cfg)
    large = stylise(net, Preprocess(PREP.mean, (1.0, 1.0, 1.0)), content, style, cfg)
    gap = float((small - large).abs().max())
    assert gap < 1e-3 if normalize == "target" else gap > 1e-2


def test_the_same_seed_gives_the_same_image():
    net, content, style = tiny(), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    cfg = StyleConfig(steps=3, optimizer="adam", init="noise", seed=7, **LAYERS)
    assert torch.equal(stylise(net, PREP, content, style, cfg), stylise(net, PREP, content, style, cfg))


@pytest.fixture
def files(tmp_path):
    save_model(tmp_path / "net.safetensors", tiny(), Meta(preprocess=PREP.to_dict(), classes=list("abc")))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(tmp_path / "content.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(tmp_path / "style.png")
    return tmp_path


def test_the_command_writes_a_png_of_the_asked_size(files, capsys):
    argv = ["style", str(files / "content.jpg"), str(files / "style.png"), "-m",
            str(files / "net.safetensors"), "--out", str(files / "out.png"), "--size", "64", "--steps", "3",
            "--no-progress",
            "--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1:0.5"]  # fmt: skip
    assert main(argv) == 0
    with Image.open(files / "out.png") as im:
        assert im.size == (64, 43) and im.mode == "RGB"
    assert "out.png: 64x43, 3 lbfgs steps" in capsys.readouterr().out


def test_side_by_side_puts_content_style_and_result_in_one_row(files, capsys):
    argv = ["style", str(files / "content.jpg"), str(files / "style.png"), "-m",
            str(files / "net.safetensors"), "--out", str(files / "out.png"), "--size", "64", "--steps", "1",
            "--no-progress", "--side-by-side"]  # fmt: skip
    assert main(argv) == 0
    with Image.open(files / "out.png") as im:
        assert im.size == (64 + 4 + 43 + 4 + 64, 43)  # the square style image at the content's height
        strip = np.asarray(im)
    assert (strip[:, 64:68] == 255).all() and (strip[:, 111:115] == 255).all()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (["--out", "OUT/out.jpg"], "give a path ending in .png"),
        (["--style-layers", "relu9_9"], "unknown layer(s) ['relu9_9']"),
        (["--style-layers", "relu1_1:heavy"], "layer weight 'heavy' of relu1_1 is not a number"),
        (["--content-layers", "gatys"], "unknown layer preset 'gatys'"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(files, capsys, change, words):
    argv = ["style", str(files / "content.jpg"), str(files / "style.png"), "-m",
            str(files / "net.safetensors"), "--out", str(files / "out.png"), "--steps", "1",
            "--no-progress"]  # fmt: skip
    i = argv.index(change[0]) if change[0] in argv else len(argv)
    argv[i : i + 2] = [change[0], change[1].replace("OUT", str(files))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (files / "out.png").exists() and not (files / "out.jpg").exists()


def test_a_layer_the_net_lacks_is_refused_before_the_progress_bar(files, capsys):
    """relu9_9 is a valid name for no config: refused before any step, so the error is its own
    line, not appended to a started progress bar (found by scripts/hostile_cases.py)."""
    argv = ["style", str(files / "content.jpg"), str(files / "style.png"), "-m",
            str(files / "net.safetensors"), "--out", str(files / "out.png"), "--steps", "1",
            "--style-layers", "relu9_1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("verydeep style: error: unknown layer(s) ['relu9_1']"), err
    assert err.count("\n") == 1 and "0/1" not in err  # no bar was started
