"""Starting from a checkpoint: the source's shape and input convention travel to the new net.

The sources are a small net trained (``_tiny_nets``) to tell which colour channel of a photo is
brightest, so a swapped channel order or a wrong pixel range changes its answers. Its "twins"
hold the same function in another convention: conv1's weights are rescaled (0-1 standardised
input) or reordered (BGR), which is exact (zero padding stays zero), so the same photo gives the
same scores through each twin and its own convention.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_nets import PREP, trained_tiny
from PIL import Image
from safetensors.torch import load_file

import verydeep
from verydeep.cli import main
from verydeep.config import RunConfig
from verydeep.data.build import build_data
from verydeep.data.preprocess import Preprocess
from verydeep.distributed import DistEnv
from verydeep.finetune import adopt_source, read_source
from verydeep.io.checkpoint import Meta, load_model, read_model_file, save_model
from verydeep.models.vgg import VGG
from verydeep.train import fit

CLASSES = ["red", "green", "blue"]
STD = (0.229, 0.224, 0.225)


def photo(label: int, seed: int) -> np.ndarray:
    """A 32 x 32 photo whose channel ``label`` is the brightest (as ``trained_tiny`` learnt)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 160, (32, 32, 3))
    x[..., label] += 90
    return x.astype(np.uint8)


def photo_folder(root, train: int = 4, val: int = 5):
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                seed = 1000 * (split == "val") + 100 * c + i
                Image.fromarray(photo(c, seed)).save(root / split / name / f"{i}.png")
    return root


def source_loss(root) -> tuple[float, int]:
    """The source net's mean loss on the val photos, in its own convention, outside verydeep's
    pipeline (the photos are crop-sized: nothing to rescale or crop); and the photo count."""
    files = sorted((root / "val").glob("*/*.png"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])
    y = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    with torch.no_grad():
        return F.cross_entropy(trained_tiny()(PREP(x)), y).item(), len(files)


def twin(net: VGG, kind: str) -> tuple[VGG, Preprocess]:
    """``net`` (paper convention ``PREP``) rewritten for another convention, same function."""
    out = VGG(**net.build_kwargs)
    out.load_state_dict(net.state_dict())
    w, m = out.features[0].weight, PREP.mean
    with torch.no_grad():
        if kind == "torchvision":  # RGB 0-1, standardised: input = (x - m) / (255 std)
            w.mul_(255 * torch.tensor(STD).view(1, 3, 1, 1))
            return out.eval(), Preprocess(tuple(v / 255 for v in m), STD, 1.0, False)
        if kind == "caffe":  # BGR 0-255, mean subtracted
            w.copy_(w.flip(1))
            return out.eval(), Preprocess(tuple(reversed(m)), (1.0, 1.0, 1.0), 255.0, True)
    return out.eval(), PREP


def save_source(path, net: VGG, prep: Preprocess) -> str:
    save_model(path, net, Meta(preprocess=prep.to_dict(), classes=CLASSES, train_scale=[224]))
    return str(path)


def tune_cfg(root, out, source, *extra) -> RunConfig:
    """A fine-tune that names no model key: the shape comes from the source."""
    sets = ["data.dataset=imagefolder", f"data.root={root}", "data.scale=[224]", "data.workers=0"]
    sets += ["data.flip=false", "data.colour_shift=0", "optim.batch_size=4", "train.device=cpu"]
    sets += ["train.precision=fp32", f"train.out_dir={out}", f"train.init_from={source}"]
    return RunConfig.from_sources(overrides=[*sets, *extra])


@pytest.mark.parametrize("preset", ["torchvision", "caffe"])
def test_the_fine_tuned_checkpoint_keeps_the_source_convention(tmp_path, preset):
    root = photo_folder(tmp_path / "photos")
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), Preprocess.preset(preset))
    fit(tune_cfg(root, tmp_path / "run", source, "train.max_steps=1", "optim.lr=1e-3"), progress=False)
    tuned = tmp_path / "run" / "checkpoints" / "last.safetensors"
    _, meta = read_model_file(tuned)
    assert meta.prep == Preprocess.preset(preset)
    assert meta.model == trained_tiny().build_kwargs | {"dropout": 0.5}  # the shape is the source's
    img = Image.open(root / "val" / "red" / "0.png")
    torch.testing.assert_close(verydeep.load(tuned).transform(img), verydeep.load(source).transform(img))


def test_the_first_training_batch_is_what_the_source_transform_gives(tmp_path):
    root = photo_folder(tmp_path / "photos", train=1)
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), Preprocess.preset("caffe"))
    cfg = tune_cfg(root, tmp_path / "run", source, "data.val_fraction=0", "optim.batch_size=3")
    src = read_source(cfg)
    data, _ = build_data(adopt_source(cfg, src), DistEnv(), torch.device("cpu"), src.prep)
    images, labels = next(iter(data.train))
    seen = data.train_prepare(images)
    transform = verydeep.load(source).transform
    for x, y in zip(seen, labels.tolist(), strict=True):
        torch.testing.assert_close(x, transform(Image.open(root / "train" / data.classes[y] / "0.png")))


@pytest.mark.parametrize("kind", ["paper", "torchvision", "caffe"])
def test_a_fine_tune_at_lr_0_scores_as_the_source(tmp_path, kind):
    """The test loss after one step at lr 1e-12 is the source's own on those photos (computed
    here with the source net and its original convention, outside verydeep's pipeline)."""
    root = photo_folder(tmp_path / "photos")
    net, prep = twin(trained_tiny(), kind)
    source = save_source(tmp_path / "src.safetensors", net, prep)
    want, n = source_loss(root)
    cfg = tune_cfg(
        root, tmp_path / "run", source, "optim.lr=1e-12", "train.max_steps=1", "data.val_fraction=0"
    )
    got = fit(cfg, progress=False)["test"]
    assert got["images"] == n
    assert got["loss"] == pytest.approx(want, rel=1e-4)


def test_data_preprocess_replaces_the_source_convention_only_when_asked(tmp_path):
    root = photo_folder(tmp_path / "photos")
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), Preprocess.preset("torchvision"))
    for choice, want in [("data", None), ("caffe", Preprocess.preset("caffe"))]:
        out = tmp_path / choice
        cfg = tune_cfg(
            root, out, source, "train.max_steps=1", f"data.preprocess={choice}", "train.eval_test=false"
        )
        fit(cfg, progress=False)
        prep = Preprocess.from_dict(read_model_file(out / "checkpoints" / "last.safetensors")[1].preprocess)
        if want is None:  # the training photos' mean pixel, 0-255, RGB
            assert prep.pixel_range == 255 and not prep.bgr and prep.std == (1.0, 1.0, 1.0)
            assert prep.mean[0] > 90 and prep.mean != PREP.mean
        else:
            assert prep == want


def test_init_from_net_a_keeps_net_a_convention_and_shape(tmp_path):
    root = photo_folder(tmp_path / "photos")
    source = save_source(tmp_path / "a.safetensors", trained_tiny(), Preprocess.preset("torchvision"))
    sets = ["model.arch=B", f"model.init_from_a={source}", "train.init_from=", "optim.lr=1e-12"]
    cfg = tune_cfg(root, tmp_path / "run", "", *sets, "train.max_steps=1", "train.eval_test=false")
    fit(cfg, progress=False)
    tensors, meta = read_model_file(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert meta.prep == Preprocess.preset("torchvision")
    assert meta.model["arch"] == "B" and meta.model["width_mult"] == 0.125 and meta.model["fc_width"] == 32
    a = trained_tiny().state_dict()  # B's conv1_1 is features.0 as in A
    torch.testing.assert_close(tensors["features.0.weight"], a["features.0.weight"], rtol=0, atol=1e-6)


def test_a_box_net_keeps_its_classifier_convention(tmp_path):
    from voc_tree import make_voc

    from verydeep.localization.api import fit_localizer
    from verydeep.localization.net import LocTrainConfig

    voc = make_voc(tmp_path / "voc", {f"{i}": [("red", 0, (20, 20, 200, 150))] for i in range(2)})
    for i in range(2):
        Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
    source = save_source(tmp_path / "cls.safetensors", trained_tiny(), Preprocess.preset("caffe"))
    _, meta, _ = fit_localizer(str(voc), source, LocTrainConfig(steps=1, batch_size=2, scale=256))
    assert meta.prep == Preprocess.preset("caffe")


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["model.arch=B"], ["model.arch is 'B'", "is 'A'"]),
        (["model.width_mult=0.5"], ["model.width_mult is 0.5", "is 0.125"]),
        (["model.crop_size=64"], ["model.crop_size is 64", "is 32"]),
        (["data.normalize=standardize"], ["data.normalize=standardize", "RGB 0-1", "data.preprocess=data"]),
        (
            ["data.dataset=fashion-mnist", "data.root=/nonexistent"],
            ["3-channel input", "data.grey_to_rgb=true"],
        ),
        (["model.init_from_a=SOURCE"], ["train.init_from and model.init_from_a"]),
    ],
)
def test_a_setting_that_contradicts_the_source_is_one_line(tmp_path, capsys, sets, needles):
    root = photo_folder(tmp_path / "photos", train=1, val=1)
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), Preprocess.preset("torchvision"))
    out = tmp_path / "run"
    argv = ["train", "--no-progress", "--set", "data.dataset=imagefolder", "--set", f"data.root={root}"]
    argv += ["--set", f"train.init_from={source}", "--set", f"train.out_dir={out}"]
    argv += [a for s in sets for a in ("--set", s.replace("SOURCE", source))]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]
    assert not out.exists()


def test_fine_tuning_loads_the_body_and_starts_a_new_fc8(tmp_path):
    """3 classes to 2: the weights before step 1 are the source's except FC8, which is new.
    (A fine-tune that loaded nothing would leave the body at its random init.)"""
    root = photo_folder(tmp_path / "photos", train=2, val=1)
    for split in ("train", "val"):
        (root / split / "blue").rename(tmp_path / f"blue-{split}")  # two classes left
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), PREP)
    cfg = tune_cfg(root, tmp_path / "run", source, "train.max_steps=1", "train.save_init=true")
    fit(cfg, progress=False)
    init = load_file(tmp_path / "run" / "checkpoints" / "init.safetensors")
    src = load_model(source)[0].state_dict()
    for k, v in src.items():
        if k.startswith("classifier.6"):
            assert init[k].shape[0] == 2 and v.shape[0] == 3
        else:
            assert torch.equal(init[k], v), k


@pytest.mark.parametrize("layers", ["all", "fc", "fc8"])
def test_frozen_layers_keep_the_source_weights(tmp_path, layers):
    root = photo_folder(tmp_path / "photos", train=2, val=1)
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), PREP)
    cfg = tune_cfg(root, tmp_path / "run", source, f"finetune.layers={layers}", "optim.lr=0.05",
                   "train.max_steps=2", "train.eval_test=false")  # fmt: skip
    fit(cfg, progress=False)
    after = load_file(tmp_path / "run" / "checkpoints" / "last.safetensors")
    before = trained_tiny().state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    body = {k for k in before if k.startswith("features.")}
    fc67 = {k for k in before if k.startswith(("classifier.0.", "classifier.3."))}
    fc8 = {"classifier.6.weight", "classifier.6.bias"}
    assert fc8 <= moved
    assert (body & moved == set()) == (layers != "all")
    assert (fc67 & moved == set()) == (layers == "fc8")


@pytest.mark.parametrize("bn", ["train", "frozen"])
def test_batch_norm_statistics_are_updated_or_frozen(tmp_path, bn):
    root = photo_folder(tmp_path / "photos", train=2, val=1)
    torch.manual_seed(0)
    net = VGG("A_bn", 3, width_mult=0.125, fc_width=32, crop_size=32)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()  # a source's statistics, unlike any batch's
    source = save_source(tmp_path / "src.safetensors", net, PREP)
    cfg = tune_cfg(
        root, tmp_path / "run", source, f"finetune.bn={bn}", "train.max_steps=1", "train.eval_test=false"
    )
    fit(cfg, progress=False)
    after = load_file(tmp_path / "run" / "checkpoints" / "last.safetensors")
    before = net.state_dict()
    stats = [k for k in before if k.endswith("running_mean")]
    assert all(torch.equal(before[k], after[k]) for k in stats) == (bn == "frozen")
    assert not torch.equal(before["features.1.weight"], after["features.1.weight"])  # BN's scale trains


def test_the_rate_is_the_paper_s_and_fc8_can_have_its_own(tmp_path):
    from verydeep.build import model_and_optimizer
    from verydeep.schedule import make_schedule
    from verydeep.train import _set_lr

    root = photo_folder(tmp_path / "photos", train=2, val=1)
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), PREP)
    scratch = RunConfig.from_sources(overrides=["data.dataset=imagefolder", f"data.root={root}"])
    assert adopt_source(scratch, None).optim.lr == 0.01
    assert adopt_source(RunConfig.from_sources(overrides=["optim.lr=0.2"]), None).optim.lr == 0.2
    cfg = tune_cfg(root, tmp_path / "run", source, "finetune.head_lr_mult=10")
    cfg = adopt_source(cfg, read_source(cfg))
    assert cfg.optim.lr == 0.001
    data, _ = build_data(cfg, DistEnv(), torch.device("cpu"), read_source(cfg).prep)
    model, opt, _ = model_and_optimizer(cfg, data, torch.device("cpu"))
    _set_lr(opt, make_schedule(cfg.optim, 1, 1), 0)
    head = {id(p) for p in model.classifier[6].parameters()}
    for g in opt.param_groups:
        want = 0.01 if {id(p) for p in g["params"]} <= head else 0.001
        assert g["lr"] == pytest.approx(want)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_finetune_keys_need_a_checkpoint_to_fine_tune():
    with pytest.raises(ValueError, match=r"finetune\.layers apply with train\.init_from"):
        RunConfig.from_sources(overrides=["finetune.layers=fc"])


def test_the_short_flags_set_the_config_keys(tmp_path, capsys):
    root = photo_folder(tmp_path / "photos", train=1, val=1)
    source = save_source(tmp_path / "src.safetensors", trained_tiny(), Preprocess.preset("caffe"))
    argv = [
        "train",
        "--data",
        str(root),
        "--init-from",
        source,
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "3",
    ]
    argv += ["--batch-size", "16", "--layers", "fc", "--print-config", "json"]
    assert main(argv) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["data"]["dataset"] == "imagefolder" and cfg["data"]["root"] == str(root)
    assert cfg["train"]["init_from"] == source and cfg["train"]["epochs"] == 3
    assert cfg["optim"]["batch_size"] == 16 and cfg["optim"]["lr"] == 0.001
    assert cfg["finetune"]["layers"] == "fc" and cfg["model"]["crop_size"] == 32  # the source's
    assert main(["train", "--lr", "0.1", "--set", "optim.lr=0.2", "--print-config"]) == 2
    assert capsys.readouterr().err.strip().endswith("--lr and --set optim.lr=... both set optim.lr; give one")


def test_the_data_folder_layout_names_the_dataset(tmp_path, fmnist_root):
    from voc_tree import make_voc

    from verydeep.data.build import dataset_kind

    assert dataset_kind(make_voc(tmp_path / "voc", {"1": []})) == "voc"
    assert dataset_kind(fmnist_root) == "fashion-mnist"
    assert dataset_kind(photo_folder(tmp_path / "photos", train=1, val=1)) == "imagefolder"
    with pytest.raises(ValueError, match="data folder not found"):
        dataset_kind(tmp_path / "missing")


def test_the_readme_commands_fine_tune_a_torchvision_file(tmp_path, capsys):
    """`verydeep convert net.pth` then `verydeep train --data --init-from`: the torchvision file
    (RGB 0-1, standardised) is fine-tuned in its own convention and still tells the colours apart
    (fed 0-255 inputs, its scores would be about 250 times too large)."""
    root = photo_folder(tmp_path / "photos")
    net, _ = twin(trained_tiny(), "torchvision")  # the ImageNet preset's mean is within 4% of ours
    torch.save(net.state_dict(), tmp_path / "net.pth")
    (tmp_path / "names.txt").write_text("\n".join(CLASSES) + "\n")  # FC8 is matched to the folders by name
    convert = ["convert", str(tmp_path / "net.pth"), str(tmp_path / "net.safetensors")]
    assert main([*convert, "--classes", str(tmp_path / "names.txt")]) == 0
    assert "input RGB 0-1, mean [0.485, 0.456, 0.406]" in capsys.readouterr().out
    argv = ["train", "--data", str(root), "--init-from", str(tmp_path / "net.safetensors")]
    argv += ["--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4", "--lr", "1e-9"]
    argv += ["--no-progress", "--set", "data.scale=[224]", "--set", "data.workers=0"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "(the source's)" in out.err
    error = float(out.out.split("test top-1 error: ")[1].split("%")[0])
    assert error < 20  # 15 photos, 3 classes
    want, _ = source_loss(root)
    loss = json.loads((tmp_path / "run" / "result.json").read_text())["test"]["loss"]
    assert want / 2 < loss < want * 2  # the scores' scale is the source's (the mean differs by 4%)
    _, meta = read_model_file(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert meta.prep == Preprocess.preset("torchvision")
