"""Data: IDX reader, image decoding of every real mode, transforms against torchvision."""

import gzip

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter

from verydeep.config import RunConfig
from verydeep.data.build import build_data, input_preprocess, split_indices
from verydeep.data.fashion_mnist import load_fashion_mnist, read_idx
from verydeep.data.folder import scan_image_folder
from verydeep.data.images import BadImageError, load_image
from verydeep.data.loaders import EpochOrder
from verydeep.data.preprocess import ColourPCA, Preprocess
from verydeep.data.transforms import TrainTransform, centre_crop_params, random_crop_params, scale_crop_flip
from verydeep.distributed import DistEnv


def test_idx_round_trip_and_corruption(tmp_path):
    arr = torch.randint(0, 256, (3, 2, 5), dtype=torch.uint8).numpy()
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert (read_idx(tmp_path / "a.gz") == arr).all()
    (tmp_path / "b").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "train")


def test_fashion_mnist_real_files(fmnist_root):
    x, y = load_fashion_mnist(fmnist_root, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10  # the test set is balanced


def test_every_real_image_mode_decodes(shared_data):
    files = list((shared_data / "hymenoptera").rglob("*.*")) + list(
        (shared_data / "critters-voc").rglob("*.jpg")
    )
    modes = set()
    for f in files:
        if f.suffix.lower() not in (".jpg", ".jpeg", ".png", ".gif"):
            continue
        with Image.open(f) as im:
            modes.add(im.mode)
        img = load_image(f)
        assert img.mode == "RGB" and min(img.size) > 0
    assert {"RGB", "L", "P"} <= modes


def test_bad_images_are_refused_clearly(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(bytes(range(256)) * 4)
    for name in ("empty.jpg", "noise.jpg", "missing.jpg"):
        with pytest.raises(BadImageError, match=name):
            load_image(tmp_path / name)


def test_batched_scale_crop_flip_equals_torchvision_resize_then_crop():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    s = 55
    ref = TF.resize(x.float(), [s, s], antialias=False)  # independent oracle: resize, then crop
    t, left, flips = torch.tensor([0, 23]), torch.tensor([23, 0]), torch.tensor([False, True])
    out = scale_crop_flip(x, 32, torch.tensor([s, s]), t, left, flips)
    expected = torch.stack([ref[0, :, 0:32, 23:55], ref[1, :, 23:55, 0:32].flip(-1)])
    assert (out.float() - expected.round().clamp(0, 255)).abs().max() <= 1  # rounding only


def test_centre_crop_matches_torchvision_and_random_crops_cover_all_positions():
    x = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    out = scale_crop_flip(x, 32, *centre_crop_params(1, (28, 28), 55, 32))
    ref = TF.center_crop(TF.resize(x.float(), [55, 55], antialias=False), [32, 32])
    assert (out.float() - ref.round().clamp(0, 255)).abs().max() <= 1
    torch.manual_seed(0)
    _, tops, lefts, flips = random_crop_params(4000, (28, 28), (37, 37), 32, flip=True)
    assert set(tops.tolist()) == set(range(6)) and set(lefts.tolist()) == set(range(6))
    assert 0.45 < flips.float().mean() < 0.55


def test_train_transform_shapes_and_scale_range(shared_data):
    img = load_image(next((shared_data / "hymenoptera" / "train" / "ants").iterdir()))
    t = TrainTransform((64, 96), 56)
    outs = [t(img) for _ in range(5)]
    assert all(o.shape == (3, 56, 56) and o.dtype == torch.uint8 for o in outs)
    with pytest.raises(ValueError, match="smaller than the crop"):
        TrainTransform((30, 40), 32)


def test_scan_image_folder(shared_data, tmp_path):
    samples, classes = scan_image_folder(shared_data / "hymenoptera" / "train")
    assert classes == ["ants", "bees"] and len(samples) > 200
    with pytest.raises(ValueError, match="no images"):
        (tmp_path / "cls").mkdir()
        scan_image_folder(tmp_path)
    with pytest.raises(NotADirectoryError):
        scan_image_folder(tmp_path / "nope")


def test_epoch_order_shards_partition_the_global_batch():
    one = EpochOrder(20, micro_batch=4, seed=3)
    ranks = [EpochOrder(20, micro_batch=2, seed=3, rank=r, world=2) for r in range(2)]
    step0 = set(ranks[0].indices()[:2].tolist()) | set(ranks[1].indices()[:2].tolist())
    assert step0 == set(one.indices()[:4].tolist())
    one.set_epoch(1)
    assert one.indices().tolist() != EpochOrder(20, 4, seed=3).indices().tolist()
    tr, va = split_indices(50, 0.2)
    assert len(va) == 10 and not set(tr.tolist()) & set(va.tolist())


def test_colour_pca_recovers_the_principal_axis():
    torch.manual_seed(0)
    direction = torch.tensor([0.6, 0.8, 0.0])
    px = 128 + torch.randn(20000, 1) * 40 * direction + torch.randn(20000, 3) * 2
    pca = ColourPCA.fit(px)
    top = torch.tensor(pca.eigvec)[:, -1]
    assert abs(abs(float(top @ direction)) - 1) < 1e-3
    shifts = pca.sample(5000, 0.1)
    # shifts lie (almost) along the top component, std = 0.1 * lambda_top * 255
    assert abs(shifts.std(0).norm().item() - 0.1 * pca.eigval[-1] * 255) / (0.1 * pca.eigval[-1] * 255) < 0.1


def test_preprocess_presets():
    x = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    x[0, 0] = 0  # R = 0, G = B = 255
    tv = Preprocess.preset("torchvision")(x)[0, :, 0, 0]
    torch.testing.assert_close(tv, torch.tensor([-0.485 / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    caffe = Preprocess.preset("caffe")(x)[0, :, 0, 0]  # BGR order out
    torch.testing.assert_close(caffe, torch.tensor([255 - 103.939, 255 - 116.779, 0 - 123.68]))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        Preprocess.preset("keras")


@pytest.mark.parametrize("name", ["paper", "caffe", "torchvision"])
def test_preprocess_with_colour_shift_matches_torchvision_normalize(name):
    """The fused one-pass form against the textbook order: add the shift, scale, reorder, then
    torchvision's transforms v2 Normalize."""
    import torchvision.transforms.v2 as T2

    prep = Preprocess.preset(name, mean=(120.0, 110.0, 100.0) if name == "paper" else None)
    x = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    colour = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 10
    want = (x.float() + colour[:, :, None, None]) * (prep.pixel_range / 255.0)
    want = want.flip(1) if prep.bgr else want
    want = T2.Normalize(list(prep.mean), list(prep.std))(want)
    torch.testing.assert_close(prep(x, colour), want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        prep(x.float()),
        T2.Normalize(list(prep.mean), list(prep.std))(
            (x.float() * (prep.pixel_range / 255.0)).flip(1)
            if prep.bgr
            else x.float() * (prep.pixel_range / 255.0)
        ),
        rtol=1e-5,
        atol=1e-4,
    )
    assert prep(x).dtype == torch.float32 and x.dtype == torch.uint8


def test_train_transform_equals_rescale_then_crop(shared_data):
    """Oracle: rescale the whole photo to S with torchvision, crop, flip (the obvious way).

    The fast transform resamples only the crop; the same random draws must give the same
    pixels up to PIL's fixed-point rounding (a grey level here and there).
    """
    import random

    from verydeep.data.transforms import rescale_smallest

    paths = sorted((shared_data / "hymenoptera" / "train" / "bees").iterdir())[:6]
    for path in paths:
        img = load_image(path)
        for seed in range(2):
            random.seed(seed)
            fast = TrainTransform((224, 480), 224)(img)
            random.seed(seed)
            ref = rescale_smallest(img, random.randint(224, 480))
            top, left = random.randint(0, ref.height - 224), random.randint(0, ref.width - 224)
            ref = ref.crop((left, top, left + 224, top + 224))
            if random.random() < 0.5:
                ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            d = (fast.int() - TF.pil_to_tensor(ref).int()).abs()
            assert d.max() <= 2 and d.float().mean() < 0.3, (path.name, d.max(), d.float().mean())


def test_tensor_path_matches_pil_path(shared_data):
    """Same draws through torchvision.io + torch resize: the same crop up to a sub-pixel shift."""
    import random

    from verydeep.data.images import load_image_tensor

    for path in sorted((shared_data / "hymenoptera" / "train" / "ants").iterdir())[:5]:
        t = TrainTransform((256, 512), 224)
        random.seed(3)
        a = t(load_image(path))
        random.seed(3)
        b = t(load_image_tensor(path, 512))
        assert b.shape == a.shape and b.dtype == torch.uint8
        assert (a.float() - b.float()).abs().mean() < 8, path.name
    grey = next(
        p for p in (shared_data / "critters-voc" / "JPEGImages").iterdir() if Image.open(p).mode == "L"
    )
    assert load_image_tensor(grey).shape[0] == 3  # greyscale JPEGs come out RGB too


def test_image_folder_training_batches_use_tensor_path(shared_data):
    """build_data on real photos: the default training transform decodes to tensors, batches are right."""
    from verydeep.config import RunConfig
    from verydeep.data.build import build_data
    from verydeep.distributed import DistEnv

    cfg = RunConfig()
    cfg.data.dataset, cfg.data.root, cfg.data.subset, cfg.data.workers = (
        "imagefolder",
        str(shared_data / "hymenoptera"),
        12,
        0,
    )
    cfg.data.scale = [256, 384]
    cfg.model.crop_size, cfg.optim.batch_size = 32, 4
    bundle, accum = build_data(cfg, DistEnv(), torch.device("cpu"))
    images, labels = next(iter(bundle.train))
    assert labels.shape == (4,)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8 and accum == 1
    assert bundle.train.loader.dataset.transform.tensor_input


def test_input_normalisation_paper_mean_or_standardized():
    g = torch.Generator().manual_seed(0)
    pixels = torch.stack(
        [torch.rand(5000, generator=g) * 200, torch.full((5000,), 7.0), torch.rand(5000) * 50], 1
    )
    x = pixels.round().to(torch.uint8).T.reshape(1, 3, 50, 100)
    paper, _ = input_preprocess(pixels.round(), "mean")
    out = paper(x)
    assert out.mean((0, 2, 3)).abs().max() < 1e-3  # the paper: mean subtracted, 0-255 range kept
    assert float(out[0, 0].std()) == pytest.approx(float(pixels[:, 0].round().std()), rel=1e-3)
    std, _ = input_preprocess(pixels.round(), "standardize")
    out = std(x)
    assert out.mean((0, 2, 3)).abs().max() < 1e-3
    assert float(out[0, 0].std()) == pytest.approx(1.0, rel=1e-3) == float(out[0, 2].std())
    assert out[0, 1].abs().max() == 0  # a constant channel stays finite (std floored), not NaN


def test_torchvision_recipe_crops_a_random_region_like_torchvision():
    import random

    import torchvision.transforms.v2 as T2

    from verydeep.data.transforms import RandomResizedCropTransform

    x = torch.arange(3 * 90 * 120, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 90, 120)
    tf = RandomResizedCropTransform(32, flip=False)
    torch.manual_seed(5)
    random.seed(5)
    ours = tf(x)
    # the same draw through torchvision's own transform (it uses torch's generator the same way)
    torch.manual_seed(5)
    ref = T2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True)(x)
    assert ours.shape == (3, 32, 32) and ours.dtype == torch.uint8
    assert torch.equal(ours, ref)
    with pytest.raises(ValueError, match=r"data\.augment must be one of paper \| torchvision"):
        RunConfig.from_sources(overrides=["data.augment=rrc"])
    with pytest.raises(ValueError, match="needs photographs"):
        build_data(
            RunConfig.from_sources(overrides=["data.augment=torchvision"]), DistEnv(), torch.device("cpu")
        )


def test_dataset_decodes_a_big_jpeg_only_as_large_as_the_drawn_scale(tmp_path, monkeypatch):
    """S is drawn before decoding: a 1600x1200 photo trained at S = 150 is decoded at 1/4 (400x300,
    still >= S), not at the 1/2 the largest S would need; the crop matches full-size decoding."""
    import random

    from verydeep.data import folder
    from verydeep.data.images import load_image_tensor

    yy, xx = np.mgrid[0:1200, 0:1600]
    arr = np.stack([xx % 256, yy % 256, (xx // 7 + yy // 5) % 256], -1).astype(np.uint8)
    arr = np.asarray(Image.fromarray(arr).resize((1600, 1200), Image.Resampling.BILINEAR))
    Image.fromarray(arr).filter(ImageFilter.GaussianBlur(6)).save(tmp_path / "big.jpg", quality=95)
    seen = []

    def spy(path, min_side=None, exif=True):
        x = load_image_tensor(path, min_side, exif)
        seen.append((min_side, tuple(x.shape[-2:])))
        return x

    monkeypatch.setattr(folder, "load_image_tensor", spy)
    t = TrainTransform((150, 300), 64, tensor_input=True)
    ds = folder.ImageFolderDataset([(tmp_path / "big.jpg", 0)], t)
    random.seed(5)
    s = t.draw_scale()
    random.seed(5)
    got = ds[0][0]
    f = max(k for k in (1, 2, 4, 8) if -(-1200 // k) >= s)
    assert f >= 4 and seen == [(s, (-(-1200 // f), -(-1600 // f)))]
    random.seed(5)
    t.draw_scale()
    full = t(load_image_tensor(tmp_path / "big.jpg"), s)  # the same draws on the full-size decode
    assert got.shape == full.shape and (got.float() - full.float()).abs().mean() < 3


@pytest.mark.parametrize("hw", [(40, 60), (60, 40), (50, 50), (375, 500), (333, 500), (500, 333), (7, 1000)])
@pytest.mark.parametrize("s", [32, 37, 73, 224, 256])
def test_rescaled_size_is_torchvisions_resize(hw, s):
    """The one size helper every rescale uses, against the size torchvision's Resize gives;
    ``round_to`` (descriptor buckets) rounds the long side to the nearest multiple instead."""
    from torchvision.transforms.v2 import functional as TVF

    from verydeep.data.transforms import rescaled_size

    want = tuple(TVF.resize(torch.zeros(1, *hw), s, antialias=False).shape[-2:])
    assert rescaled_size(*hw, s) == want
    h, w = rescaled_size(*hw, s, round_to=32)
    long = max(h, w)
    assert min(h, w) == s and (long % 32 == 0 or long == s)  # never below s
    assert long == s or abs(long - s * max(hw) / min(hw)) <= 16  # the nearest multiple of 32


@pytest.mark.parametrize(("length", "n"), [(10, 3), (60000, 7), (9025, 512), (5, 5), (5, 9), (4, 1), (4, 0)])
def test_spread_indices_keep_every_class_share(length, n):
    from verydeep.data.loaders import spread_indices

    idx = spread_indices(length, n)
    assert len(idx) == min(n, length) and idx == sorted(set(idx))
    if 1 < n < length:
        assert idx[0] == 0 and idx[-1] == length - 1
        # over 5 equal classes sorted by label, each gets its share of the picks (+-1)
        per = np.bincount([i * 5 // length for i in idx], minlength=5)
        assert per.max() - per.min() <= 1 or n < 5


def test_training_pixels_are_read_once_per_process_and_again_when_a_photo_changes(tmp_path, monkeypatch):
    """A study builds its data twenty times over one set: the mean and colour PCA come from the
    same photos each time, so they are decoded once; a rewritten photo is decoded again."""
    import os

    from verydeep.data import build

    paths = []
    for i, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (80, 70), colour).save(paths[-1])
    samples = [(p, 0) for p in paths]
    reads = []
    real = build.load_image
    monkeypatch.setattr(build, "load_image", lambda p, **kw: reads.append(p) or real(p, **kw))
    first = build._sample_folder_pixels(samples)
    assert len(reads) == 3 and first.shape == (3 * 73 * 64, 3)  # shortest side 64, aspect kept
    assert torch.equal(build._sample_folder_pixels(list(samples)), first) and len(reads) == 3
    Image.new("RGB", (80, 70), (250, 250, 250)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))  # a new time even where the clock did not move
    again = build._sample_folder_pixels(samples)
    assert len(reads) == 6 and not torch.equal(again, first)
    assert (again.float().mean(0) > first.float().mean(0)).all()  # the white photo is in


def test_decoding_workers_follow_the_cores_each_rank_may_use(monkeypatch):
    """-1 (auto): on a GPU the rank's share of the affinity mask but one (at most 32), on the CPU
    each caller's own number capped at the share; a given count is kept."""
    import os

    from verydeep.data import loaders

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loaders.decoding_workers(-1, gpu, cpu_auto=0) == 15
    assert loaders.decoding_workers(-1, cpu, cpu_auto=2) == 2 and loaders.decoding_workers(-1, cpu, 0) == 0
    assert loaders.decoding_workers(5, gpu, cpu_auto=0) == 5 and loaders.decoding_workers(0, gpu, 8) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks on the machine: 2 cores each
    assert loaders.decoding_workers(-1, gpu, cpu_auto=0) == 1 and loaders.decoding_workers(-1, cpu, 8) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(512)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loaders.decoding_workers(-1, gpu, cpu_auto=0) == loaders.GPU_WORKERS_MAX
