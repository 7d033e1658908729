"""A compact classification loop on a VOC set's image-level labels (stopgap for small reports).

The localisation net is initialised from a classification net at the same scale. Until the
main trainer (``verydeep train``) reads VOC layouts, this trains one on random crops of the
box-annotated photos, each labelled with the class of the largest object it sees: SGD with
momentum and a cosine-decayed rate, random crops and flips at one scale S, torchvision's VGG
init (Kaiming-normal convs, N(0, 0.01) FC layers). Two departures from the paper, both because
a 16-layer net must learn from 290 photographs in a few CPU minutes: the default is D with
batch norm (``D_bn``; plain D stayed at chance for 200 steps in our runs), and inputs are
standardised (mean and std) rather than only mean-subtracted.

Example:
    >>> from verydeep.localization.classifier import ClsTrainConfig
    >>> ClsTrainConfig(steps=10).batch_size
    32
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import Preprocess
from ..models.init import init_weights
from ..models.vgg import VGG
from .data import ScaledSet, centre_crop, rgb_stats, sample_crops


@dataclass
class ClsTrainConfig:
    arch: str = "D_bn"  # see the module docstring
    width_mult: float = 0.25
    fc_width: int = 256
    crop_size: int = 64
    scale: int = 384  # S in paper units
    steps: int = 600
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def standardiser(ds: ScaledSet) -> Preprocess:
    """Training-set mean subtracted, then divided by the per-channel std.

    The paper subtracts the mean only, which suits its N(0, 0.01) init; with Kaiming init a
    0-255 input range makes the first logits ~100 and training diverges, so the std goes too.
    """
    mean, std = rgb_stats(ds)
    return Preprocess(tuple(m / 255 for m in mean), tuple(s / 255 for s in std), 1.0, False)


def build_classifier(cfg: ClsTrainConfig, num_classes: int) -> VGG:
    torch.manual_seed(cfg.seed)
    net = VGG(cfg.arch, num_classes, 3, cfg.width_mult, cfg.fc_width, cfg.crop_size, cfg.dropout)
    init_weights(net, "kaiming")
    for i in (0, 3, 6):  # torchvision's VGG init: Kaiming convs, N(0, 0.01) FC layers
        nn.init.normal_(net.classifier[i].weight, 0.0, 0.01)
    return net


def train_classifier(
    net: VGG,
    ds: ScaledSet,
    prep: Preprocess,
    cfg: ClsTrainConfig,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """SGD on soft-max cross-entropy over random crops; returns {"loss": [...], "cpu_s"}."""
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    # the paper divides the rate by 10 on plateaus; a fixed cosine decay suits a fixed short budget
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    net.train()
    losses, t0 = [], time.process_time()
    for step in range(cfg.steps):
        idx = torch.randint(len(ds), (cfg.batch_size,), generator=gen)
        b = sample_crops(ds, idx, net.crop_size, True, "largest", gen)
        loss = F.cross_entropy(net(prep(b.images)), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step, losses[-1])
    net.eval()
    return {"loss": losses, "cpu_s": time.process_time() - t0}


@torch.no_grad()
def centre_crop_accuracy(net: VGG, ds: ScaledSet, prep: Preprocess) -> float:
    """Top-1 accuracy on centre crops, each image labelled with its first object's class."""
    net.eval()
    crops = torch.stack([centre_crop(img, net.crop_size)[0] for img in ds.images])
    labels = torch.tensor([int(lab[0]) for lab in ds.labels])
    pred = net(prep(crops)).argmax(1)
    return float((pred == labels).float().mean())
