import pytest

from verydeep.config import RunConfig, pixels


def test_defaults_are_the_papers():
    from verydeep.finetune import adopt_source

    c = adopt_source(RunConfig(), None)  # optim.lr 0: the paper's rate for the run (0.01 from scratch)
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay, c.optim.batch_size) == (0.01, 0.9, 5e-4, 256)
    assert c.model.dropout == 0.5 and c.model.init_std == 0.01 and c.optim.max_reductions == 3
    assert c.data.scale == [256] and c.data.colour_shift == 0.1


def test_toml_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[model]\narch = "C"\ncrop_size = 64\n[data]\nscale = [256, 512]\n')
    c = RunConfig.from_sources(f, ["model.arch=E_bn", "optim.lr=1e-3", "data.flip=false"])
    assert (c.model.arch, c.model.crop_size, c.optim.lr, c.data.flip) == ("E_bn", 64, 1e-3, False)
    assert c.data.jittered and c.data.eval_scale == 384
    assert RunConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.arch=F", "unknown VGG config"),
        ("model.crop_size=16", "crop_size"),
        ("data.scale=[512, 256]", "Smin <= Smax"),
        ("optim.nope=1", "unknown key 'optim.nope'"),  # was "in [OptimConfig]": a class name
        ("optim.lr=fast", "optim.lr expects float, got 'fast'"),  # was "lr: cannot parse"
        ("data.scale=5", r"data.scale expects a list of int such as \[256, 512\], got 5"),
        ("nosection=1", "section.key=value"),
        ("train.precision=fp8", "precision"),
        ("data.flip=maybe", "true or false"),
        ("data.normalize=zscore", r"one of mean \| standardize"),
        ("data.dataset=coco", r"one of fashion-mnist \| imagefolder \| voc"),
    ],
)
def test_bad_values_give_one_line_errors(override, message):
    with pytest.raises(ValueError, match=message) as e:
        RunConfig.from_sources(overrides=[override])
    assert "\n" not in str(e.value)


IMAGES = "data.dataset=imagefolder"


@pytest.mark.parametrize(
    "key, where, message, reads_it",
    [
        ("data.train_split=train[:80%]", IMAGES, "name VOC split files", "data.dataset=voc"),
        ("data.grey_to_rgb=true", IMAGES, "applies to Fashion-MNIST only", "data.dataset=fashion-mnist"),
        ("data.scale=[256,512]", "data.augment=torchvision", "RandomResizedCrop", "data.augment=paper"),
        ("optim.warmup_epochs=5", "optim.schedule=plateau", "cosine only", "optim.schedule=cosine"),
        ("optim.patience=2", "optim.schedule=cosine", "plateau only", "optim.schedule=plateau"),
        ("optim.plateau_window=3", "optim.schedule=cosine", "plateau only", "optim.schedule=plateau"),
        ("optim.max_reductions=2", "optim.schedule=cosine", "plateau only", "optim.schedule=plateau"),
        ("optim.lr_factor=0.5", "optim.schedule=cosine", "plateau only", "optim.schedule=plateau"),
        (
            "model.init_from_a_convs=2",
            "model.init_from_a=",
            "with model.init_from_a",
            "model.init_from_a=A.st",
        ),
    ],
)
def test_keys_the_run_never_reads_are_refused(key, where, message, reads_it):
    # each was accepted and ignored; where the run reads it, it is taken
    photos = [IMAGES] if "augment" in where else []  # torchvision augmentation needs photographs
    with pytest.raises(ValueError, match=message):
        RunConfig.from_sources(overrides=[*photos, where, key])
    RunConfig.from_sources(overrides=[*photos, reads_it, key])
    RunConfig.from_sources(overrides=[*photos, where])  # the key at its default passes


def test_a_comma_list_is_a_list():
    # --set data.scale=256,512 was refused as "a list of int, got (256, 512)": a Python tuple
    assert RunConfig.from_sources(overrides=["data.scale=256,512"]).data.scale == [256, 512]


def test_unknown_toml_key(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[model]\narchh = 'A'\n")
    with pytest.raises(ValueError, match="archh"):
        RunConfig.from_sources(f)
    with pytest.raises(ValueError, match="not found"):
        RunConfig.from_sources(tmp_path / "missing.toml")


def test_paper_scales_at_small_crops():
    assert pixels(256, 224) == 256 and pixels(384, 224) == 384
    assert pixels(256, 32) == 37 and pixels(512, 32) == 73 and pixels(384, 32) == 55
