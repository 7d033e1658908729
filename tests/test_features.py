"""Descriptors against an independent oracle (explicit Linear layers over unfolded pool5 patches)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from verydeep.cli import main
from verydeep.config import pixels
from verydeep.data.preprocess import Preprocess
from verydeep.data.transforms import rescaled_size
from verydeep.data.voc_labels import read_voc_labels
from verydeep.features import (
    DescriptorConfig,
    FeatureExtractor,
    combine_scales,
    describe_dataset,
    describe_images,
    describe_paths,
    labelled_images,
)
from verydeep.io.features import Descriptors, load_descriptors, save_descriptors
from verydeep.models.init import init_weights
from verydeep.models.vgg import VGG

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PREP = Preprocess.preset("paper", mean=(120.0, 115.0, 100.0))


pytestmark = pytest.mark.usefixtures("one_thread")


def small_net(crop: int = 64, seed: int = 0) -> VGG:
    torch.manual_seed(seed)
    net = VGG("A", num_classes=4, width_mult=0.125, fc_width=24, crop_size=crop)
    init_weights(net, "kaiming")  # keeps activations alive through the ReLUs (random weights suffice)
    return net.eval()


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    g = np.random.default_rng(seed)
    return [Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def oracle_fc7(net: VGG, x: torch.Tensor) -> torch.Tensor:
    """Mean over positions of FC7 = ReLU(W7 ReLU(W6 patch + b6) + b7), patches of pool5 via unfold."""
    fmap = net.features(x)
    k = net.kernel
    patches = F.unfold(fmap, kernel_size=k).transpose(1, 2)  # (N, positions, C*k*k), C-major like flatten
    fc6, fc7 = net.classifier[0], net.classifier[3]
    h = torch.relu(patches @ fc6.weight.T + fc6.bias)
    return torch.relu(h @ fc7.weight.T + fc7.bias).mean(dim=1)


def oracle_descriptor(net: VGG, img: Image.Image, sides: list[int], combine: str) -> torch.Tensor:
    per_scale = []
    for side in sides:
        x = PREP(TF.pil_to_tensor(TF.resize(img, side, antialias=True))[None])  # torchvision's own resize
        per_scale.append((oracle_fc7(net, x) + oracle_fc7(net, x.flip(-1))) / 2)
    d = torch.cat(per_scale, 1) if combine == "stack" else torch.stack(per_scale).mean(0)
    return d / d.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("combine", ["stack", "average"])
def test_descriptor_equals_unfolded_linear_oracle(combine):
    net = small_net()
    # long sides are whole numbers at both scales (120x80 -> 96x64, 144x96), so resizes agree exactly;
    # three same-size images with batch_size 2 exercise full and partial buckets
    imgs = random_images([(120, 80), (80, 120), (120, 80), (80, 80), (120, 80)])
    cfg = DescriptorConfig(scales=(64, 96), units="pixels", combine=combine, batch_size=2, align="topleft")
    got = describe_images(net, PREP, imgs, cfg)
    want = torch.cat([oracle_descriptor(net, im, [64, 96], combine) for im in imgs])
    assert got.shape == (5, 48 if combine == "stack" else 24)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (want[:, :24].abs() > 1e-6).sum() > 20  # the oracle is not trivially zero


def test_flip_off_and_fc6_layer():
    net = small_net()
    img = random_images([(96, 64)])[0]
    x = PREP(TF.pil_to_tensor(img)[None])
    got = describe_images(net, PREP, [img], DescriptorConfig(scales=(64,), units="pixels", flip=False))
    torch.testing.assert_close(got, F.normalize(oracle_fc7(net, x), dim=1), rtol=1e-4, atol=1e-5)
    got6 = describe_images(net, PREP, [img], DescriptorConfig(scales=(64,), units="pixels", layer="fc6"))
    fc6 = net.classifier[0]
    patches = F.unfold(net.features(x), net.kernel).transpose(1, 2)
    patches_f = F.unfold(net.features(x.flip(-1)), net.kernel).transpose(1, 2)
    d = (
        torch.relu(patches @ fc6.weight.T + fc6.bias).mean(1)
        + torch.relu(patches_f @ fc6.weight.T + fc6.bias).mean(1)
    ) / 2
    torch.testing.assert_close(got6, F.normalize(d, dim=1), rtol=1e-4, atol=1e-5)


def oracle_block(net: VGG, x: torch.Tensor, block: int) -> torch.Tensor:
    """Conv block ``block``'s output by name: conv<b>_<i> + ReLU, 2x2 max-pool after each block."""
    for b in range(1, block + 1):
        for name, conv in net.conv_layers().items():
            if name.startswith(f"conv{b}_"):
                x = torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
        x = F.max_pool2d(x, 2)
    return x


@pytest.mark.parametrize("block", [3, 5])
def test_pooled_conv_block_layer(block):
    net = small_net()
    img = random_images([(128, 96)])[0]
    x = PREP(TF.pil_to_tensor(img)[None])
    cfg = DescriptorConfig(scales=(96,), units="pixels", layer=f"pool{block}", align="topleft")
    got = describe_images(net, PREP, [img], cfg)
    want = (oracle_block(net, x, block).mean((2, 3)) + oracle_block(net, x.flip(-1), block).mean((2, 3))) / 2
    assert got.shape == (1, want.shape[1]) and want.shape[1] == {3: 32, 5: 64}[block]
    torch.testing.assert_close(got, F.normalize(want, dim=1), rtol=1e-4, atol=1e-5)


def test_pooled_conv_block_refuses_int8_and_unknown_layers():
    from verydeep.evaluation.core import dense_pooled

    net = small_net()
    with pytest.raises(ValueError, match="layer must be fc7, fc6 or a conv-stage layer"):
        DescriptorConfig(layer="conv5")
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['relu3_3'\] for VGG A"):  # A has no conv3_3
        describe_images(
            net,
            PREP,
            random_images([(64, 64)]),
            DescriptorConfig(scales=(64,), units="pixels", layer="relu3_3"),
        )
    with pytest.raises(ValueError, match="output must be one of"):
        dense_pooled(net, torch.zeros(1, 3, 64, 64), PREP, output="pool6")
    imgs = random_images([(96, 64)] * 2)
    int8 = DescriptorConfig(scales=(64,), units="pixels", precision="int8")
    assert describe_images(net, PREP, imgs, replace(int8, layer="pool5")).shape == (2, 64)
    with pytest.raises(ValueError, match="float net"):  # its body is one quantised module
        describe_images(net, PREP, imgs, replace(int8, layer="pool4"))


def test_a_named_conv_stage_layer_is_pooled_like_a_block():
    net = small_net()
    img = random_images([(96, 64)])[0]
    x = PREP(TF.pil_to_tensor(img)[None])
    convs = net.conv_layers()

    def relu2_1(t):  # conv1_1, ReLU, pool1, conv2_1, ReLU: written out
        t = F.max_pool2d(
            torch.relu(F.conv2d(t, convs["conv1_1"].weight, convs["conv1_1"].bias, padding=1)), 2
        )
        return torch.relu(F.conv2d(t, convs["conv2_1"].weight, convs["conv2_1"].bias, padding=1)).mean((2, 3))

    cfg = DescriptorConfig(scales=(64,), units="pixels", layer="relu2_1", align="topleft")
    want = F.normalize((relu2_1(x) + relu2_1(x.flip(-1))) / 2, dim=1)
    torch.testing.assert_close(describe_images(net, PREP, [img], cfg), want, rtol=1e-4, atol=1e-5)


def test_combine_shapes_and_normalisation():
    g = torch.Generator().manual_seed(0)
    per = [torch.rand(3, 5, generator=g) * s for s in (1.0, 10.0, 100.0)]
    stacked = combine_scales(per, "stack")
    averaged = combine_scales(per, "average")
    assert stacked.shape == (3, 15) and averaged.shape == (3, 5)
    torch.testing.assert_close(stacked.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(averaged, F.normalize(sum(per) / 3, dim=1))
    each = combine_scales(per, "stack", normalise_each=True)  # every scale weighs the same
    torch.testing.assert_close(each[:, 5:10].norm(dim=1), torch.full((3,), 3**-0.5))


def test_scales_in_paper_units_and_sizes():
    cfg = DescriptorConfig(scales=(256, 384, 512))
    assert cfg.sides(32) == [pixels(256, 32), pixels(384, 32), pixels(512, 32)] == [37, 55, 73]
    assert cfg.sides(224) == [256, 384, 512]
    assert rescaled_size(100, 200, 50, round_to=1) == (50, 100)  # (H, W)
    assert rescaled_size(300, 100, 40, round_to=8) == (120, 40)
    with pytest.raises(ValueError, match="crop size"):
        DescriptorConfig(scales=(20,), units="pixels").sides(32)
    with pytest.raises(ValueError, match="combine"):
        DescriptorConfig(combine="max")


def test_size_step_makes_fewer_buckets_with_close_results():
    net = small_net()
    imgs = random_images([(97, 64), (99, 64), (101, 64)])
    exact = describe_images(net, PREP, imgs, DescriptorConfig(scales=(64,), units="pixels"))
    rounded = describe_images(net, PREP, imgs, DescriptorConfig(scales=(64,), units="pixels", size_step=32))
    assert exact.shape == rounded.shape == (3, 24)
    assert not torch.allclose(exact, rounded)  # the aspect ratio changed a little...
    assert (exact * rounded).sum(1).min() > 0.9  # ...and the descriptors barely


def test_feature_extractor_matches_model():
    net = small_net()
    x = torch.randn(2, 3, 96, 128)
    fx = FeatureExtractor(net, out_layers=range(7))
    maps = fx(x)
    for got, want in zip(maps[:5], net.feature_maps(x), strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(maps[6], net.dense_head(net.features(x), upto=2))
    torch.testing.assert_close(maps[5], net.dense_head(net.features(x), upto=1))
    assert fx.channels() == [m.shape[1] for m in maps]
    assert fx.reductions() == [2, 4, 8, 16, 32, 32, 32]
    assert [m.shape[-1] for m in maps[:5]] == [128 // r for r in fx.reductions()[:5]]
    with pytest.raises(ValueError, match="unknown layers"):
        FeatureExtractor(net, ["conv9"])


def test_descriptor_files_round_trip(tmp_path):
    labels = np.array([[1, -1], [0, 1], [-1, 1]], dtype=np.int8)
    d = Descriptors(np.random.rand(3, 4), labels, ["a", "b", "c"], ["x", "y"], {"q": [256]})
    for ext in ("safetensors", "npz"):
        save_descriptors(tmp_path / f"d.{ext}", d)
        e = load_descriptors(tmp_path / f"d.{ext}")
        assert e.task == "multilabel" and e.classes == ["x", "y"] and e.info == {"q": [256]}
        np.testing.assert_array_equal(e.labels, labels)
        np.testing.assert_array_equal(e.features, d.features)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a verydeep descriptor file"):
        load_descriptors(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="do not match"):
        Descriptors(np.zeros((2, 3)), np.zeros(3), ["a", "b"], ["x"])


needs_data = pytest.mark.skipif(
    not (DATA / "critters-voc").is_dir(), reason=f"{DATA} (shared real data) absent"
)


@needs_data
def test_voc_labels_are_image_level():
    paths, labels, classes = read_voc_labels(DATA / "critters-voc", "train")
    assert classes == ["kangaroo", "raccoon"] and labels.shape == (291, 2)
    # every image has every class of its boxes: here each photo shows one species
    assert ((labels == 1).sum(1) == 1).all()
    assert all(p.is_file() for p in paths)
    assert [p.name.split("-")[0] for p in paths] == [classes[i] for i in labels.argmax(1)]


@needs_data
def test_describe_real_photos_skips_bad_files(tmp_path):
    net = small_net(crop=32)
    paths, _, _ = labelled_images(DATA / "critters-voc", "val")
    grey = [p for p in paths if Image.open(p).mode == "L"][:1]
    bad = tmp_path / "garbage.jpg"  # not an image at all
    bad.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    files = [*paths[:3], bad, empty, *grey]
    cfg = DescriptorConfig(scales=(256, 384))
    d, kept = describe_paths(net, PREP, files, cfg)
    assert kept == [0, 1, 2, 5][: 3 + len(grey)]
    ref = describe_images(net, PREP, [Image.open(files[i]).convert("RGB") for i in kept], cfg)
    assert d.shape == (len(kept), 24)
    assert (d * ref).sum(1).min() > 0.99  # same pipeline up to JPEG draft decoding
    with pytest.raises(ValueError, match="cannot decode"):
        describe_paths(net, PREP, [bad], cfg, on_bad_image="fail")


@needs_data
def test_describe_dataset_voc_split():
    net = small_net(crop=32)
    v = describe_dataset(
        net, PREP, DATA / "critters-voc", "val", DescriptorConfig(scales=(256,), batch_size=64)
    )
    assert v.task == "multilabel" and v.labels.shape == (73, 2) and v.features.shape == (73, 24)
    assert v.info["descriptor"]["scales"] == (256,) and v.info["skipped"] == []
    assert v.paths[0].endswith("JPEGImages/kangaroo-00149.jpg")


def test_grey_input_equals_grey_image():
    net = small_net()
    img = random_images([(96, 64)])[0]
    cfg = DescriptorConfig(scales=(64,), units="pixels")
    grey = describe_images(net, PREP, [img], DescriptorConfig(scales=(64,), units="pixels", grey=True))
    torch.testing.assert_close(grey, describe_images(net, PREP, [img.convert("L").convert("RGB")], cfg))
    assert not torch.allclose(grey, describe_images(net, PREP, [img], cfg))


def test_descriptors_equal_fc7_maps_written_out():
    """The descriptor from the FC7 map written out with ``dense_head`` (no shared helper): per
    scale the spatial mean of the map of the image and of its flip, averaged; then stacked or
    averaged over scales and L2-normalised."""
    from verydeep.evaluation.core import rescale

    net = small_net()
    imgs = random_images([(120, 80), (80, 80), (80, 120)])

    def fc7(img, q, centre):
        x = rescale(img, q)[None]
        if centre:  # keep crop + 32k pixels per side, the rest cut half from each border
            h, w = x.shape[-2:]
            th, tw = 32 + (h - 32) // 32 * 32, 32 + (w - 32) // 32 * 32
            x = x[..., (h - th) // 2 : (h - th) // 2 + th, (w - tw) // 2 : (w - tw) // 2 + tw]
        return sum(net.dense_head(net.features(PREP(v)), upto=2).mean((2, 3)) for v in (x, x.flip(-1)))[0] / 2

    for align in ("centre", "topleft"):
        with torch.no_grad():
            per_q = [torch.stack([fc7(im, q, align == "centre") for im in imgs]) for q in (64, 96)]
        for combine, want in (("stack", torch.cat(per_q, 1)), ("average", (per_q[0] + per_q[1]) / 2)):
            cfg = DescriptorConfig(scales=(64, 96), units="pixels", combine=combine, align=align)
            torch.testing.assert_close(describe_images(net, PREP, imgs, cfg), F.normalize(want, dim=1))


def test_photos_of_different_sizes_share_a_batch():
    """Issue 19, item 7: sizes fall into 32-px buckets once the pixels no window sees are cut, so
    three photos of three sizes take one forward pass (before: one pass each), same result."""
    net = small_net()
    imgs = random_images([(100, 64), (104, 64), (110, 64)])  # widths 100/104/110 -> 96 px of windows
    calls = []
    hook = net.features.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    together = describe_images(net, PREP, imgs, DescriptorConfig(scales=(64,), units="pixels"))
    hook.remove()
    assert len(calls) == 1 and calls[0][0] == 6  # 3 photos + their flips
    alone = torch.cat(
        [describe_images(net, PREP, [im], DescriptorConfig(scales=(64,), units="pixels")) for im in imgs]
    )
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


def test_decoding_workers_give_the_same_descriptors(tmp_path):
    """Decoding in worker processes with the deep prefetch gives the same descriptors as in the
    main process (the worker-count rule is tested in test_data.py)."""
    net = small_net(32)
    paths = []
    for i, img in enumerate(random_images([(50, 40), (64, 48), (40, 70), (50, 41), (33, 90)])):
        img.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    cfg = DescriptorConfig(scales=(40.0,), units="pixels", batch_size=2)
    main_process, kept = describe_paths(net, PREP, paths, cfg, workers=0)
    in_workers, kept2 = describe_paths(net, PREP, paths, cfg, workers=2)
    assert kept == kept2 == list(range(5))
    torch.testing.assert_close(main_process, in_workers)


def test_features_on_a_voc_root_need_a_split_and_a_descriptor_suffix(tmp_path, capsys, monkeypatch):
    # both used to be found late or never: a VOC root without --split read `train` silently, and a
    # .txt output failed only after every image was described
    from voc_tree import make_voc

    import verydeep.features as features

    root = make_voc(tmp_path / "voc", {"a": [("cat", 0, (1, 1, 9, 9))]})
    with pytest.raises(ValueError, match=r"is a VOC root: name its split"):
        labelled_images(root)
    described = []
    monkeypatch.setattr(features, "describe_dataset", lambda *a, **k: described.append(a))
    ckpt = tmp_path / "missing.safetensors"
    assert main(["features", str(ckpt), str(root), "--split", "train", "--out", str(tmp_path / "d.txt")]) == 2
    assert "must end in .safetensors or .npz" in capsys.readouterr().err and described == []
