"""Typed run configuration: dataclasses, TOML files and ``--set section.key=value`` overrides.

Every field has the paper's value as its default where the paper gives one. Scales (S, Q) are
written in the paper's units, i.e. pixels for a 224 crop; for another crop size they are scaled
by crop/224 so that small-image work keeps the paper's ratios (S=256 at crop 32 -> 37 px).

Example:
    >>> from verydeep.config import RunConfig
    >>> cfg = RunConfig.from_sources(overrides=["model.arch=A", "data.scale=[256, 512]"])
    >>> cfg.model.arch, cfg.data.scale, cfg.data.jittered
    ('A', [256, 512], True)
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .models.vgg import parse_arch


def pixels(s: float, crop_size: int) -> int:
    """A paper-unit scale (pixels at crop 224) in pixels at ``crop_size``."""
    return max(crop_size, round(s * crop_size / 224))


@dataclass
class ModelConfig:
    arch: str = "D"  # paper letter (A, A-LRN, B, C, D, E) or vgg11/13/16/19, "_bn" for batch norm
    num_classes: int = 0  # 0: take it from the dataset
    in_channels: int = 0  # 0: take it from the dataset (1 for Fashion-MNIST unless grey_to_rgb)
    width_mult: float = 1.0  # conv widths are 64..512 times this
    fc_width: int = 4096
    crop_size: int = 224
    dropout: float = 0.5
    init: str = "normal"  # normal (std below), glorot, kaiming
    init_std: float = 0.01  # the paper's "variance 1e-2", read as std 0.01 like its Caffe solvers
    init_from_a: str = ""  # checkpoint of a trained net A: copy its first convs and FC layers
    init_from_a_convs: int = 4

    def __post_init__(self) -> None:
        parse_arch(self.arch)
        if self.crop_size < 32:
            raise ValueError(f"model.crop_size must be >= 32 (five 2x2 pools), got {self.crop_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("normal", "glorot", "kaiming"):
            raise ValueError(f"model.init must be normal, glorot or kaiming, got {self.init!r}")
        if self.width_mult <= 0 or self.fc_width < 1:
            raise ValueError("model.width_mult and model.fc_width must be positive")


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | imagefolder | voc (image-level labels)
    root: str = "/usr/share/datasets/fashion-mnist"
    scale: list[int] = field(default_factory=lambda: [256])  # S, or [Smin, Smax] for jittering
    test_scale: int = 0  # Q for held-out evaluation; 0: S, or (Smin+Smax)/2 when jittered
    val_fraction: float = 0.1  # held out from the training split to drive the LR schedule
    subset: int = 0  # use only the first N training images (0: all)
    flip: bool = True
    # paper: rescale to S, random crop (Section 3.1) | torchvision: RandomResizedCrop (8-100% of the
    # area), flip, the reference recipe's peer (S then only sets the held-out centre crop's Q)
    augment: str = "paper"
    normalize: str = "mean"  # mean: the paper's mean subtraction (0-255); standardize: also / std
    colour_shift: float = 0.1  # std of the PCA colour-shift alphas (Krizhevsky 2012); 0: off
    grey_to_rgb: bool = False  # Fashion-MNIST: replicate to 3 channels instead of a 1-channel net
    workers: int = -1  # DataLoader workers for image files; -1: min(8, cores)
    on_bad_image: str = "skip"  # skip | fail
    # voc only: ImageSets/Main split names (slices like "train[:80%]" allowed); an image's label
    # is the class of its largest object (ImageFolder reads root/train and root/val|test instead)
    train_split: str = "train"
    test_split: str = "val"

    def __post_init__(self) -> None:
        if self.dataset not in ("fashion-mnist", "imagefolder", "voc"):
            raise ValueError(f"data.dataset must be fashion-mnist, imagefolder or voc, got {self.dataset!r}")
        if len(self.scale) not in (1, 2) or min(self.scale) < 1 or self.scale != sorted(self.scale):
            raise ValueError(f"data.scale must be [S] or [Smin, Smax] with Smin <= Smax, got {self.scale}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.on_bad_image not in ("skip", "fail"):
            raise ValueError(f"data.on_bad_image must be skip or fail, got {self.on_bad_image!r}")
        if self.augment not in ("paper", "torchvision"):
            raise ValueError(f"data.augment must be paper or torchvision, got {self.augment!r}")
        if self.normalize not in ("mean", "standardize"):
            raise ValueError(f"data.normalize must be mean or standardize, got {self.normalize!r}")

    @property
    def jittered(self) -> bool:
        return len(self.scale) == 2 and self.scale[0] != self.scale[1]

    @property
    def eval_scale(self) -> int:
        """Q used for held-out evaluation (paper: Q = S, or 384 for [256, 512] jittering)."""
        if self.test_scale:
            return self.test_scale
        return (self.scale[0] + self.scale[-1]) // 2


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_biases: bool = False  # L2 on conv/FC weights only (Caffe's decay_mult 0 on biases and BN)
    batch_size: int = 256  # global batch, summed over ranks
    micro_batch: int = 0  # per-step batch per rank; smaller than batch -> gradient accumulation
    lr_factor: float = 0.1
    patience: int = 1  # epochs without held-out improvement before the LR is divided
    max_reductions: int = 3  # the paper divided it three times, then stopped
    schedule: str = "plateau"  # plateau (the paper's) | cosine (warm-up, then to 0 at train.epochs)
    warmup_epochs: float = 1.0  # cosine only

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.micro_batch < 0:
            raise ValueError("optim.lr and optim.batch_size must be positive, optim.micro_batch >= 0")
        if self.schedule not in ("plateau", "cosine"):
            raise ValueError(f"optim.schedule must be plateau or cosine, got {self.schedule!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclass
class TrainConfig:
    epochs: int = 74  # upper bound; the schedule usually stops earlier
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    channels_last: bool = True
    compile: bool = False
    out_dir: str = "runs/default"
    resume: bool = True  # continue from out_dir's last checkpoint if there is one
    init_from: str = ""  # fine-tune from this checkpoint (e.g. S=384 from S=256, new classes allowed)
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit); for smoke runs
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps mid-epoch (0: per epoch only)
    save_init: bool = False  # also keep checkpoints/init.safetensors: the weights before step 1
    eval_test: bool = True  # report test error at the end (never used for decisions)
    on_nonfinite: str = "stop"  # stop | skip

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        sections = {}
        unknown_sections = set(d) - set(_TYPES)
        if unknown_sections:
            raise ValueError(f"unknown section(s) {sorted(unknown_sections)}; known: {list(_TYPES)}")
        for f in dataclasses.fields(cls):
            sub_cls = _TYPES[f.name]
            values = d.get(f.name, {})
            known = {g.name for g in dataclasses.fields(sub_cls)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown key(s) in [{f.name}]: {', '.join(sorted(unknown))}")
            hints = typing.get_type_hints(sub_cls)
            values = {k: _typed(f"{f.name}.{k}", hints[k], v) for k, v in values.items()}
            sections[f.name] = sub_cls(**values)
        return cls(**sections)

    @classmethod
    def from_sources(cls, path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
        """Defaults, then a TOML file, then ``section.key=value`` overrides, then validation."""
        d: dict = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise ValueError(f"config file not found: {p}")
            with p.open("rb") as fh:
                d = tomllib.load(fh)
        for item in overrides:
            key, sep, raw = item.partition("=")
            section, _, name = key.strip().partition(".")
            if not sep or not name or section not in _TYPES:
                raise ValueError(
                    f"--set expects section.key=value with section in {list(_TYPES)}, got {item!r}"
                )
            d.setdefault(section, {})[name] = _coerce(_TYPES[section], name, raw.strip())
        return cls.from_dict(d)


_TYPES = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def _typed(key: str, hint: object, value: object) -> object:
    """``value`` if it has the field's type (ints accepted as floats), else a one-line ValueError."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list):
            return [_typed(key, item, v) for v in value]
    elif hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    what = f"a list of {typing.get_args(hint)[0].__name__}" if origin is list else hint.__name__
    raise ValueError(f"{key} expects {what}, got {value!r}")


def _coerce(section_cls: type, name: str, raw: str) -> object:
    """Parse ``raw`` as the field's type: numbers, bools, lists, or plain strings."""
    hints = typing.get_type_hints(section_cls)
    if name not in hints:
        raise ValueError(f"unknown key {name!r} in [{section_cls.__name__}]")
    hint = hints[name]
    if hint is str:
        return raw
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} expects true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"{name}: cannot parse {raw!r}") from None
    if hint is float and isinstance(value, int):
        value = float(value)
    return value
