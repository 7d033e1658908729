"""Starting a run from a checkpoint: the source's shape and input convention travel with it.

``train.init_from`` (fine-tuning, e.g. an imported torchvision, Caffe or Keras VGG-16) and
``model.init_from_a`` (the paper's initialisation from net A) each name a source checkpoint. The
new net is built in the source's shape: its configuration (``init_from`` only: net A initialises
deeper nets), width, FC width, crop and input channels. Its inputs keep the source's convention
(channel order, pixel range, mean, std), the one its filters were trained on, unless
``data.preprocess`` names another on purpose. A setting that contradicts the source is a
one-line error naming both values; a setting left at its default takes the source's value.

Example:
    >>> import os, tempfile
    >>> from verydeep.config import RunConfig
    >>> from verydeep.data.preprocess import Preprocess
    >>> from verydeep.finetune import adopt_source, read_source
    >>> from verydeep.io.checkpoint import Meta, save_model
    >>> from verydeep.models.vgg import VGG
    >>> path = os.path.join(tempfile.mkdtemp(), "src.safetensors")
    >>> save_model(path, VGG("B", 5, width_mult=0.25, fc_width=64, crop_size=64),
    ...            Meta(preprocess=Preprocess.preset("torchvision").to_dict()))
    >>> cfg = RunConfig.from_sources(overrides=["data.dataset=imagefolder", "data.root=photos",
    ...                                         f"train.init_from={path}"])
    >>> source = read_source(cfg)
    >>> new = adopt_source(cfg, source)
    >>> new.model.arch, new.model.width_mult, new.model.crop_size, source.prep.describe()
    ('B', 0.25, 64, 'RGB 0-1, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .config import RunConfig, check_schedule_keys, is_default
from .data.preprocess import Preprocess
from .io.checkpoint import Meta, read_meta
from .models.arch import parse_arch
from .models.vgg import VGG

# builder arguments the new net takes from its source: the tensors' shapes depend on them
SHAPE_KEYS = ("width_mult", "fc_width", "crop_size", "in_channels")


@dataclass(frozen=True)
class Source:
    """The checkpoint a run starts from, and the config key that names it."""

    key: str  # train.init_from | model.init_from_a
    path: str
    meta: Meta

    @property
    def prep(self) -> Preprocess:
        return self.meta.prep


def read_source(cfg: RunConfig) -> Source | None:
    """The run's source checkpoint (its metadata only), or None for a net trained from scratch."""
    if cfg.train.init_from and cfg.model.init_from_a:
        raise ValueError(
            "train.init_from and model.init_from_a both name a checkpoint to start from; give one "
            "(init_from loads every layer, so net A's would be overwritten)"
        )
    if cfg.train.init_from:
        return Source("train.init_from", cfg.train.init_from, read_meta(cfg.train.init_from))
    if cfg.model.init_from_a:
        return Source("model.init_from_a", cfg.model.init_from_a, read_meta(cfg.model.init_from_a))
    return None


def adopt_source(cfg: RunConfig, source: Source | None) -> RunConfig:
    """``cfg`` with the model's shape taken from ``source`` and ``optim.lr`` 0 made a rate (a
    copy; ``cfg`` is left as given). Every run calls it, with or without a source.

    A shape key set to anything but its default and the source's value, a data set whose channel
    count the source cannot read, and ``data.normalize`` set while the source's convention is
    kept are one-line ValueErrors naming both values."""
    cfg = _with_lr(cfg, source)
    if source is None:
        return cfg
    m, theirs = cfg.model, source.meta.model
    keys = SHAPE_KEYS + (("arch",) if source.key == "train.init_from" else ())
    changes = {}
    for key in keys:
        ours, value = getattr(m, key), theirs.get(key)
        if value is None or _same(key, ours, value):
            continue
        if not is_default(m, key):
            raise ValueError(
                f"model.{key} is {ours!r} but {source.key} {source.path} is {value!r}: leave model.{key} "
                "unset (a net started from a checkpoint takes its shape)"
            )
        changes[key] = value
    _check_channels(cfg, source)
    d = cfg.data
    if d.preprocess == "auto" and not is_default(d, "normalize"):
        raise ValueError(
            f"data.normalize={d.normalize} computes an input convention from the data, but "
            f"{source.key} {source.path} brings its own ({source.prep.describe()}); leave "
            "data.normalize unset, or set data.preprocess=data to replace the source's on purpose"
        )
    return dataclasses.replace(cfg, model=dataclasses.replace(m, **changes))


def _with_lr(cfg: RunConfig, source: Source | None) -> RunConfig:
    """``optim.lr`` 0 made the paper's rate: 0.001 to fine-tune (its S=384 and jittered stages
    start there from a trained net), 0.01 otherwise (from scratch, and from net A's layers);
    ``optim.schedule`` auto made cosine to fine-tune, the paper's plateau rule otherwise (chosen
    by the fine-tuning study, docs/FINETUNE.md). The keys the schedule never reads are refused."""
    tune = source is not None and source.key == "train.init_from"
    o = cfg.optim
    lr = o.lr or (0.001 if tune else 0.01)
    schedule = o.schedule if o.schedule != "auto" else ("cosine" if tune else "plateau")
    optim = dataclasses.replace(o, lr=lr, schedule=schedule)
    check_schedule_keys(optim)
    return dataclasses.replace(cfg, optim=optim)


def _same(key: str, ours: object, theirs: object) -> bool:
    if key == "arch":
        return parse_arch(str(ours)) == parse_arch(str(theirs))
    return ours == theirs


def _check_channels(cfg: RunConfig, source: Source) -> None:
    """The data's channel count is known from the config: grey Fashion-MNIST has 1 unless
    ``data.grey_to_rgb``; photographs are read as RGB."""
    d = cfg.data
    data = 1 if d.dataset == "fashion-mnist" and not d.grey_to_rgb else 3
    theirs = source.meta.model.get("in_channels", 3)
    if data != theirs:
        hint = " (set data.grey_to_rgb=true)" if data == 1 else ""
        raise ValueError(
            f"{source.key} {source.path} takes {theirs}-channel input but the data has {data} "
            f"channel(s){hint}"
        )


def describe_start(cfg: RunConfig, source: Source, prep: Preprocess) -> str:
    """One log line: what the run took from its source, and the input convention it trains in."""
    m = cfg.model
    kept = (
        "the source's" if prep == source.prep else f"data.preprocess={cfg.data.preprocess}, not the source's"
    )
    return (
        f"starting from {source.path} ({source.key}): {m.arch}, width x{m.width_mult:g}, FC {m.fc_width}, "
        f"crop {m.crop_size}; input {prep.describe()} ({kept})"
    )


def trainable(model: VGG, layers: str) -> list[nn.Module]:
    """The modules that train under ``finetune.layers``: every layer (``all``), FC6-FC8
    (``fc``), or FC8 alone (``fc8``: a linear probe on the source's FC7)."""
    if layers == "all":
        return [model]
    if layers == "fc":
        return [model.classifier]
    return [model.classifier[5], model.classifier[6]]  # FC7's dropout regularises FC8 as in training


def freeze(model: VGG, layers: str, bn: str) -> Callable[[nn.Module], None]:
    """Turn off the gradients of the layers ``finetune.layers`` leaves frozen (in place, on the
    run's own net), and return the function that puts the net in training mode: frozen parts
    (and, with ``bn=frozen``, every batch norm) then run as in evaluation, so their batch
    statistics stay the source's and no dropout is drawn before frozen layers."""
    train = trainable(model, layers)
    live = {id(p) for m in train for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in live)
    live_modules = {id(m) for t in train for m in t.modules()}
    fixed = [m for m in model.modules() if id(m) not in live_modules and not list(m.children())]
    if bn == "frozen":
        fixed += [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train_mode(net: nn.Module) -> None:
        net.train()
        for m in fixed:
            m.eval()

    return train_mode
