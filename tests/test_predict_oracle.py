"""``image_posteriors`` (what ``verydeep predict`` prints) against a dense evaluation written here
from the paper's description alone: the image rescaled to each test scale Q in {S-32, S, S+32}
(PIL, smallest side Q px, the long side truncated), the border no 32-px-stride window sees cut
equally from both sides, the conv layers applied to the whole image, FC6-8 applied at every
position of the pool5 map as a (crop/32 x crop/32) convolution, the class score map averaged
with the flipped image's, averaged over positions, soft-maxed, and the posteriors averaged over
the three scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from verydeep.data.preprocess import Preprocess
from verydeep.evaluation.predict import image_posteriors
from verydeep.io.checkpoint import Meta
from verydeep.models.vgg import VGG

CROP, S = 32, 512  # paper units: Q = 480, 512, 544 are 69, 73, 78 px at crop 32


def dense_scores(net: VGG, x: torch.Tensor) -> torch.Tensor:
    """(classes,) mean score over the positions of the dense map of a (1, 3, H, W) input."""
    pool5 = net.features(x)
    k = CROP // 32
    cols = F.unfold(pool5, k)  # (1, C k k, positions), channel-major as the FC6 weight is laid out
    scores = net.classifier(cols.transpose(1, 2))  # dropout is off in eval mode
    return scores[0].mean(0)


def oracle(net: VGG, prep: Preprocess, img: Image.Image) -> torch.Tensor:
    """(3 scales, classes) posteriors."""
    out = []
    for q_paper in (S - 32, S, S + 32):
        q = round(q_paper * CROP / 224)
        w, h = img.size
        # the long side truncated, as torchvision's Resize computes it
        size = (int(w * q / h), q) if h <= w else (q, int(h * q / w))
        x = torch.from_numpy(np.array(img.resize(size, Image.BILINEAR))).permute(2, 0, 1)[None]
        hh, ww = x.shape[-2:]
        th, tw = CROP + (hh - CROP) // 32 * 32, CROP + (ww - CROP) // 32 * 32
        top, left = (hh - th) // 2, (ww - tw) // 2
        x = prep(x[..., top : top + th, left : left + tw])
        with torch.no_grad():
            scores = (dense_scores(net, x) + dense_scores(net, x.flip(-1))) / 2
        out.append(scores.softmax(0))
    return torch.stack(out)


@pytest.mark.parametrize("size", [(120, 90), (77, 140)])
def test_dense_multiscale_posteriors_match_the_papers_description(size):
    torch.manual_seed(0)
    net = VGG("B", num_classes=6, width_mult=0.125, fc_width=48, crop_size=CROP).eval()
    for m in net.modules():  # outputs that depend on the input: a wrong scale or cut shows
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight)
            torch.nn.init.normal_(m.bias, std=0.1)
    prep = Preprocess((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
    meta = Meta(preprocess=prep.to_dict(), classes=list("abcdef"), train_scale=[S])
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(2))  # photo-like
    got = image_posteriors(net, meta, img)
    per_scale = oracle(net, prep, img)
    # the scales disagree by 10x the tolerance below (float sums differ by about 2e-5)
    assert (per_scale - per_scale.mean(0)).abs().max() > 1e-3
    torch.testing.assert_close(got, per_scale.mean(0), atol=1e-4, rtol=1e-3)
