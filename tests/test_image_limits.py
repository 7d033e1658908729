"""What one image may cost, and which way up it is (issue 17, items 9 and 13).

A tiny file declaring an absurd shape is refused from its header and skipped like any bad image
in every reader (train, eval, predict, features, preresize); a rescale beyond the pixel limit is
refused before it allocates. EXIF orientation is honoured by default, in every reader, and can be
turned off; numpy's rotations are the oracle."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from verydeep.cli import main
from verydeep.data.folder import ImageFolderDataset
from verydeep.data.images import MAX_ASPECT, BadImageError, load_image, load_image_tensor
from verydeep.data.transforms import TrainTransform, rescale_smallest
from verydeep.io.checkpoint import Meta, save_model
from verydeep.io.preresize import preresize
from verydeep.models.vgg import VGG


def strip_png(path, width=1_000_000):
    Image.new("L", (width, 1)).save(path, optimize=True)  # about 1 kB declaring a million pixels
    return path


def test_a_strip_is_refused_from_its_header(tmp_path):
    p = strip_png(tmp_path / "strip.png")
    assert p.stat().st_size < 5000
    t = time.perf_counter()
    with pytest.raises(BadImageError, match=f"longer than {MAX_ASPECT}:1"):
        load_image(p)
    with pytest.raises(BadImageError, match=r"strip\.png"):
        load_image_tensor(p, min_side=64)
    assert time.perf_counter() - t < 1


def test_aspect_limit_and_rescale_limit(tmp_path):
    Image.new("RGB", (MAX_ASPECT * 20, 20)).save(tmp_path / "ok.png")
    Image.new("RGB", (MAX_ASPECT * 20 + 1, 20)).save(tmp_path / "long.png")
    img = load_image(tmp_path / "ok.png")
    with pytest.raises(BadImageError):
        load_image(tmp_path / "long.png")
    with pytest.raises(BadImageError, match="beyond the pixel limit"):
        rescale_smallest(img, 4096)  # 102400 x 4096 would be 1.3 GB
    assert rescale_smallest(img, 40).size == (MAX_ASPECT * 40, 40)


@pytest.fixture
def mixed(tmp_path):
    """A class folder with one good photo and the strip."""
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        Image.new("RGB", (50, 40), (30, 160, 90)).save(tmp_path / "data" / c / "good.png")
    strip_png(tmp_path / "data" / "a" / "strip.png")
    torch.manual_seed(0)
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(tmp_path / "net.safetensors", net, Meta(classes=["a", "b"]))
    return tmp_path


def test_every_reader_skips_and_counts_the_strip(mixed, capsys):
    ds = ImageFolderDataset(
        [(mixed / "data" / "a" / n, 0) for n in ("good.png", "strip.png")], TrainTransform((37, 37), 32)
    )
    assert ds[0] is not None and ds[1] is None
    ck, data = str(mixed / "net.safetensors"), str(mixed / "data")
    assert main(["eval", ck, "--data", data, "--json", "--workers", "0", "--method", "centre"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
    assert main(["predict", "-m", ck, str(mixed / "data" / "a" / "strip.png"), data + "/b/good.png"]) == 1
    assert "skipped" in capsys.readouterr().err
    assert main(["features", ck, data, "--out", str(mixed / "f.npz"), "--scales", "256"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1" in out and "images:" in err  # the progress bar
    assert (
        main(["features", ck, data, "--out", str(mixed / "g.npz"), "--scales", "256", "--no-progress"]) == 0
    )
    assert "images:" not in capsys.readouterr().err
    assert preresize(mixed / "data", mixed / "small", 36)["bad"] == 1


def exif_photo(path, orientation):
    """60x40 JPEG, left half red, right half blue, tagged with ``orientation``."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30, 0] = 255
    arr[:, 30:, 2] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif)
    return arr


# EXIF orientation -> the displayed image from the stored one (numpy as the oracle)
UPRIGHT = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_honoured_by_default(tmp_path, orientation):
    stored = exif_photo(tmp_path / "p.jpg", orientation)
    want = UPRIGHT[orientation](stored).astype(float)
    pil = np.asarray(load_image(tmp_path / "p.jpg"), float)
    tensor = load_image_tensor(tmp_path / "p.jpg").permute(1, 2, 0).numpy().astype(float)
    assert pil.shape == tensor.shape == want.shape
    assert np.abs(pil - want).mean() < 4 and np.abs(tensor - want).mean() < 4
    raw = np.asarray(load_image(tmp_path / "p.jpg", exif=False), float)
    assert raw.shape == stored.shape and np.abs(raw - stored).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tensor_path_orients_as_pil_exif_transpose(tmp_path, orientation):
    """Every orientation, PIL's ``ImageOps.exif_transpose`` as the oracle for the tensor path's
    own EXIF reader and view transforms; a gradient image, so any wrong turn shows."""
    from PIL import ImageOps

    from verydeep.data.images import exif_orientation

    yy, xx = np.mgrid[0:40, 0:60]
    arr = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(tmp_path / "p.jpg", quality=98, exif=exif)
    data = (tmp_path / "p.jpg").read_bytes()
    assert exif_orientation(data) == orientation == Image.open(tmp_path / "p.jpg").getexif()[0x0112]
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "p.jpg")).convert("RGB"), float)
    got = load_image_tensor(tmp_path / "p.jpg").permute(1, 2, 0).numpy().astype(float)
    assert got.shape == want.shape and np.abs(got - want).max() <= 2


def test_exif_reader_agrees_with_pil_on_real_photos(shared_data):
    from verydeep.data.images import exif_orientation

    paths = sorted((shared_data / "critters-voc" / "JPEGImages").glob("*.jpg"))
    paths += sorted((shared_data / "hymenoptera" / "train").rglob("*.jpg"))
    tagged = 0
    for p in paths:
        exif = Image.open(p).getexif()
        pil, tagged = exif.get(0x0112, 1), tagged + (0x0112 in exif)
        # kangaroo-00076.jpg says 0, outside 1-8: both readers leave such a photo as stored
        assert exif_orientation(p.read_bytes()) == (pil if 1 <= pil <= 8 else 1), p.name
    assert tagged > 20  # 28 photos carry the tag (two with values outside 1-8): a real comparison


def test_tensor_path_without_simplejpeg_reads_the_same(tmp_path, monkeypatch, shared_data):
    """Where simplejpeg's wheel is missing every JPEG goes through PIL: same sizes, pixels within
    the two libjpeg-turbo builds' rounding."""
    from verydeep.data import images

    paths = sorted((shared_data / "hymenoptera" / "train" / "bees").glob("*.jpg"))[:6]
    fast = [images.load_image_tensor(p, min_side=128) for p in paths]
    monkeypatch.setattr(images, "simplejpeg", None)
    for p, a in zip(paths, fast, strict=True):
        b = images.load_image_tensor(p, min_side=128)
        assert a.shape == b.shape and (a.float() - b.float()).abs().mean() < 1.5, p.name


def test_exif_in_datasets_and_preresize(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    exif_photo(tmp_path / "src" / "a" / "p.jpg", 6)
    sample = [(tmp_path / "src" / "a" / "p.jpg", 0)]
    to_tensor = lambda img: torch.as_tensor(np.array(img)).permute(2, 0, 1)  # noqa: E731
    assert ImageFolderDataset(sample, to_tensor)[0][0].shape[1:] == (60, 40)
    assert ImageFolderDataset(sample, to_tensor, exif=False)[0][0].shape[1:] == (40, 60)
    preresize(tmp_path / "src", tmp_path / "up", 100)  # small: re-encoded upright, not copied
    assert Image.open(tmp_path / "up" / "a" / "p.jpg").size == (40, 60)
    preresize(tmp_path / "src", tmp_path / "raw", 100, exif=False)
    assert (tmp_path / "raw" / "a" / "p.jpg").read_bytes() == (tmp_path / "src" / "a" / "p.jpg").read_bytes()


def test_the_training_config_has_the_switch():
    from verydeep.config import RunConfig

    assert RunConfig.from_sources(overrides=["data.exif=false"]).data.exif is False
    assert RunConfig().data.exif is True
