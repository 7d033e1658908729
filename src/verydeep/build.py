"""The net and its optimiser from a run's config: what ``train.fit`` builds before its epochs.

The data's class and channel counts fill the config (``resolved``); the net is initialised as
the config asks (a scheme, then net A's layers, then a checkpoint to fine-tune), put in the
fastest layout for the device, and given SGD with momentum, L2 on weights only by default.

Example:
    >>> from verydeep.build import build_model, param_groups
    >>> from verydeep.config import RunConfig
    >>> cfg = RunConfig.from_sources(overrides=["model.arch=A", "model.fc_width=32"])
    >>> net = build_model(cfg, classes=10, channels=1)
    >>> [len(g["params"]) for g in param_groups(net, 5e-4, decay_biases=False)]  # weights, biases
    [11, 11]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from .config import RunConfig
from .data.build import DataBundle
from .finetune import freeze
from .io.checkpoint import load_model
from .models.init import init_from_net_a, init_weights
from .models.vgg import VGG
from .models.winograd import winograd_convs
from .numerics import Numerics, resolve
from .optim import param_groups, sgd


def resolved(cfg: RunConfig, classes: int, channels: int) -> RunConfig:
    """``cfg`` with the data's class and channel counts filled in; a count given that
    disagrees with the data is a one-line error, never silently replaced."""
    m = cfg.model
    if m.num_classes and m.num_classes != classes:
        raise ValueError(f"model.num_classes is {m.num_classes} but the dataset has {classes} classes")
    if m.in_channels and m.in_channels != channels:
        raise ValueError(f"model.in_channels is {m.in_channels} but the data has {channels} channels")
    model = dataclasses.replace(m, num_classes=classes, in_channels=channels)
    return dataclasses.replace(cfg, model=model)


def build_model(cfg: RunConfig, classes: int, channels: int, names: list[str] | None = None) -> VGG:
    """The net of the config, initialised as asked (scheme, then net A, then a checkpoint).
    ``names``: the data's class names, which a fine-tune's FC8 is matched to by name."""
    m = resolved(cfg, classes, channels).model  # the counts checked against the data's
    model = VGG(m.arch, classes, channels, m.width_mult, m.fc_width, m.crop_size, m.dropout)
    init_weights(model, m.init, m.init_std)
    if m.init_from_a:
        net_a, _ = load_model(m.init_from_a)
        init_from_net_a(model, net_a, m.init_from_a_convs)
    if cfg.train.init_from and not _fine_tune_from(model, cfg.train.init_from, names):
        head = model.classifier[6]  # a new label set: FC8 as the paper initialises a layer
        nn.init.normal_(head.weight, 0.0, cfg.finetune.head_std)
        nn.init.zeros_(head.bias)
    return model


def _fine_tune_from(model: VGG, path: str, names: list[str] | None) -> bool:
    """Load every tensor of ``path``; FC8 too when the classes are the same, its rows reordered
    to the data's class order where the names say so (returns whether FC8 was loaded). A new
    label set keeps a new FC8."""
    source, meta = load_model(path)
    own, theirs = model.state_dict(), source.state_dict()
    if names and meta.classes != names and sorted(meta.classes) == sorted(names):
        order = torch.tensor([meta.classes.index(n) for n in names])
        for k in ("classifier.6.weight", "classifier.6.bias"):
            theirs[k] = theirs[k][order]
    loaded = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in loaded]
    if any(not k.startswith("classifier.6") for k in missing):
        raise ValueError(f"{path} does not fit {model.arch}: {missing[:3]} differ (same config needed)")
    model.load_state_dict(loaded, strict=False)
    return not missing


def training_numerics(cfg: RunConfig, device: torch.device) -> Numerics:
    """``train.precision``, ``train.winograd`` and ``train.channels_last`` resolved for ``device``."""
    t = cfg.train
    return resolve(t.precision, device, channels_last=t.channels_last, winograd=t.winograd, training=True)


def model_and_optimizer(
    cfg: RunConfig, data: DataBundle, device: torch.device, numerics: Numerics | None = None
) -> tuple[VGG, torch.optim.SGD, Callable[[nn.Module], None]]:
    """The net on ``device`` in ``numerics``' form (Winograd convs, channels_last; default: the
    config's, resolved), its SGD with momentum over the layers that train, and the function that
    puts it in training mode (frozen layers as in evaluation; ``finetune.freeze``)."""
    numerics = numerics or training_numerics(cfg, device)
    model = build_model(cfg, len(data.classes), data.channels, data.classes).to(device)
    if numerics.winograd:
        model = winograd_convs(model)  # a copy with the same state_dict: checkpoints do not change
    if numerics.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_mode = freeze(model, cfg.finetune.layers, cfg.finetune.bn)  # on the net that trains
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.decay_biases, cfg.finetune.head_lr_mult)
    opt = sgd(groups, cfg.optim.lr, cfg.optim.momentum, device)
    return model, opt, train_mode
