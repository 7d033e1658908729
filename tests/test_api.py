"""``verydeep.load`` (issue 18, item 15): one call gives the net, its transform and its classes,
checked against torchvision's own ``weights.transforms()`` and class names on a converted
torchvision checkpoint, and against the checkpoint's metadata for a BGR (Caffe-style) one."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import VGG11_Weights

import verydeep
from verydeep.io.checkpoint import Meta, save_model
from verydeep.io.weights.convert import convert


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))


def test_a_converted_torchvision_checkpoint_matches_torchvision(tmp_path, photo):
    torch.manual_seed(0)
    tv = torchvision.models.vgg11().eval()  # random weights: no download
    torch.save(tv.state_dict(), tmp_path / "vgg11.pth")
    convert(tmp_path / "vgg11.pth", tmp_path / "vgg11.safetensors")
    net, transform, classes = verydeep.load(tmp_path / "vgg11.safetensors")
    assert classes == VGG11_Weights.IMAGENET1K_V1.meta["categories"] and classes[0] == "tench"
    ours, theirs = transform(photo), VGG11_Weights.IMAGENET1K_V1.transforms()(photo)
    assert ours.shape == theirs.shape == (3, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(net(ours[None]), tv(theirs[None]), atol=1e-4, rtol=1e-4)


def test_bgr_metadata_and_dense_form(tmp_path, photo):
    torch.manual_seed(0)
    model = verydeep.VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    prep = {"mean": [10.0, 20.0, 30.0], "std": [1.0, 1.0, 1.0], "pixel_range": 255.0, "bgr": True}
    save_model(
        tmp_path / "n.safetensors", model, Meta(classes=["x", "y"], preprocess=prep, train_scale=[256, 512])
    )
    loaded = verydeep.load(tmp_path / "n.safetensors", crop=False)
    x = loaded.transform(photo)
    q = round(384 * 32 / 224)  # the middle of [256, 512], in pixels at crop 32
    assert min(x.shape[1:]) == q and loaded.meta.train_scale == [256, 512]
    small = torchvision.transforms.v2.functional.resize(photo, q)  # PIL, as evaluation resizes
    raw = torch.from_numpy(np.array(small)).permute(2, 0, 1)
    want = raw.float().flip(0) - torch.tensor([10.0, 20.0, 30.0])[:, None, None]  # BGR, mean off
    torch.testing.assert_close(x, want)
    assert loaded.model.dense_forward(x[None]).shape[:2] == (1, 2)
