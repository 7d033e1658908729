"""Small trained nets for the evaluation tests (40 Adam steps, a couple of seconds)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from verydeep.data.preprocess import Preprocess
from verydeep.models.vgg import VGG

PREP = Preprocess.preset("paper", mean=(120.0, 110.0, 100.0))


@functools.cache
def trained_tiny(classes: int = 3, seed: int = 0, crop: int = 32, steps: int = 40) -> VGG:
    """VGG-A at width 1/8, trained to tell which colour channel of a noisy image is brightest."""
    torch.manual_seed(seed)
    net = VGG("A", num_classes=classes, width_mult=0.125, fc_width=32, crop_size=crop, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # SGD needs many more steps from scratch
    for _ in range(steps):
        y = torch.randint(0, classes, (16,))
        x = torch.randint(0, 160, (16, 3, crop, crop)).float()
        x[torch.arange(16), y % 3] += 90
        loss = F.cross_entropy(net(PREP(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()
