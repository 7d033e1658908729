"""SGD with momentum as every net of verydeep trains with it: the parameter groups (L2 on conv
and FC weights, none on biases by default), the fused kernel where the device has one, and a
rate set per group. Classification (``build``) and the box nets (``localization``) share it.

Example:
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.optim import param_groups, set_rate, sgd
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> opt = sgd(param_groups(net, 5e-4, decay_biases=False), 0.01, 0.9, "cpu")
    >>> [len(g["params"]) for g in opt.param_groups], opt.param_groups[0]["fused"]  # weights, biases
    ([11, 11], True)
    >>> set_rate(opt, 0.001); opt.param_groups[1]["lr"]
    0.001
"""

from __future__ import annotations

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, decay_biases: bool, head_lr_mult: float = 1.0
) -> list[dict]:
    """L2 on conv/FC weights; biases and BN parameters only if ``decay_biases``. Frozen
    parameters (``requires_grad`` off) are left out. FC8's (``classifier[6]``) groups carry
    ``lr_mult``: the schedule's rate is multiplied by it (``finetune.head_lr_mult``)."""
    head = {id(p) for p in model.classifier[6].parameters()} if head_lr_mult != 1.0 else set()
    groups = {(d, h): [] for d in (True, False) for h in (False, True)}
    for p in model.parameters():
        if p.requires_grad:
            groups[(p.ndim > 1 or decay_biases, id(p) in head)].append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if d else 0.0, "lr_mult": head_lr_mult if h else 1.0}
        for (d, h), ps in groups.items()
        if ps or not h  # the two body groups always (resumed optimiser states keep their order)
    ]


def sgd(groups: list[dict], lr: float, momentum: float, device: torch.device | str) -> torch.optim.SGD:
    """SGD with momentum over ``groups``, fused on CPUs and CUDA GPUs: one kernel per step, and it
    can skip a bad step on the device (``engine``'s non-finite check reads nothing back)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused)


def set_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate ``lr`` into every group, times the group's ``lr_mult`` (1 if it has none)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
