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
from dataclasses import dataclass

from .config import RunConfig, is_default
from .data.preprocess import Preprocess
from .io.checkpoint import Meta, read_meta
from .models.arch import parse_arch

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
    """``cfg`` with the model's shape taken from ``source`` (a copy; ``cfg`` is left as given).

    A shape key set to anything but its default and the source's value, a data set whose channel
    count the source cannot read, and ``data.normalize`` set while the source's convention is
    kept are one-line ValueErrors naming both values."""
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
