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
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .models.arch import parse_arch
from .ranges import DEVICE_PATTERN, MAX_SCALE, check, describe, spec


def pixels(s: float, crop_size: int) -> int:
    """A paper-unit scale (pixels at crop 224) in pixels at ``crop_size``."""
    return max(crop_size, round(s * crop_size / 224))


def is_default(section: object, name: str) -> bool:
    """Whether a config field holds its declared default (keys a run does not read may only)."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)  # type: ignore[arg-type]
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return getattr(section, name) == default


@dataclass
class ModelConfig:
    arch: str = spec(
        "D", words="A | A-LRN | B | C | D | E | vgg11 | vgg13 | vgg16 | vgg19, each also _bn"
    )  # paper letter (A, A-LRN, B, C, D, E) or vgg11/13/16/19, "_bn" for batch norm
    num_classes: int = spec(0, lo=0, hi=100_000)  # 0: take it from the dataset
    in_channels: int = spec(0, choices=(0, 1, 3))  # 0: from the dataset (1 for Fashion-MNIST)
    width_mult: float = spec(1.0, gt=0, hi=8)  # conv widths are 64..512 times this
    fc_width: int = spec(4096, lo=1, hi=65_536)
    crop_size: int = spec(224, lo=32, hi=4096)  # >= 32: five 2x2 pools
    dropout: float = spec(0.5, lo=0, lt=1)
    init: str = spec("normal", choices=("normal", "glorot", "kaiming"))  # normal: std below
    init_std: float = spec(0.01, gt=0, hi=1)  # the paper's "variance 1e-2", read as std 0.01 (Caffe)
    init_from_a: str = spec(
        "", words="a checkpoint path, or empty"
    )  # checkpoint of a trained net A: copy its first convs and FC layers
    init_from_a_convs: int = spec(4, lo=0, hi=8)

    def __post_init__(self) -> None:
        parse_arch(self.arch)
        check(self, "model")
        if not is_default(self, "init_from_a_convs") and not self.init_from_a:  # nothing reads it
            raise ValueError("model.init_from_a_convs applies with model.init_from_a (a net A checkpoint)")


@dataclass
class DataConfig:
    dataset: str = spec("fashion-mnist", choices=("fashion-mnist", "imagefolder", "voc"))
    # not empty: "" would be the working directory, every subfolder a class
    root: str = spec("/usr/share/datasets/fashion-mnist", pattern=r".*\S.*", words="a folder (not empty)")
    # S (paper units: pixels at crop 224), or [Smin, Smax] for jittering
    scale: list[int] = spec([256], lo=224, hi=MAX_SCALE)  # noqa: RUF009 (spec gives a default_factory)
    test_scale: int = spec(
        0, lo=0, hi=MAX_SCALE
    )  # Q for held-out evaluation; 0: S, or the mid of [Smin, Smax]
    val_fraction: float = spec(0.1, lo=0, lt=1)  # held out from the training split to drive the LR schedule
    subset: int = spec(0, lo=0)  # use only N training images (0: all)
    flip: bool = True
    # paper: rescale to S, random crop (Section 3.1) | torchvision: RandomResizedCrop (8-100% of the
    # area), flip, the reference recipe's peer (S then only sets the held-out centre crop's Q)
    augment: str = spec("paper", choices=("paper", "torchvision"))
    # the net's input convention (channel order, pixel range, mean, std). auto: a net started from
    # a checkpoint (train.init_from, model.init_from_a) keeps that checkpoint's; a new net takes
    # the training data's (data.normalize). data: the training data's even when fine-tuning (the
    # source's filters then see inputs they were not trained on). torchvision | caffe: that preset
    preprocess: str = spec("auto", choices=("auto", "data", "torchvision", "caffe"))
    # how a convention is computed from the data: mean: the paper's mean subtraction (0-255 kept) |
    # standardize: also / std
    normalize: str = spec("mean", choices=("mean", "standardize"))
    colour_shift: float = spec(0.1, lo=0, hi=10)  # std of the PCA colour-shift alphas (Krizhevsky); 0: off
    grey_to_rgb: bool = False  # Fashion-MNIST: replicate to 3 channels instead of a 1-channel net
    # DataLoader workers for image files; -1: from the cores (data/loaders.decoding_workers)
    workers: int = spec(-1, lo=-1, hi=256)
    on_bad_image: str = spec("skip", choices=("skip", "fail"))
    exif: bool = True  # turn photographs upright by their EXIF orientation (false: pixels as stored)
    # voc only: ImageSets/Main split names (slices like "train[:80%]" allowed); an image's label
    # is the class of its largest object (ImageFolder reads root/train and root/val|test instead)
    train_split: str = spec("train", words="a split name, e.g. train or train[:80%]")
    test_split: str = spec("val", words="a split name, e.g. val or train[80%:]")

    def __post_init__(self) -> None:
        check(self, "data")
        if self.augment != "paper" and self.dataset == "fashion-mnist":
            raise ValueError(
                "data.augment=torchvision needs photographs (imagefolder or voc), not Fashion-MNIST"
            )
        if len(self.scale) not in (1, 2) or self.scale != sorted(self.scale):
            raise ValueError(f"data.scale must be [S] or [Smin, Smax] with Smin <= Smax, got {self.scale}")
        self._check_applicable()

    def _check_applicable(self) -> None:
        """Keys that the chosen dataset or augmentation never reads are refused when set to
        anything but their default (a key the run never reads is refused, not ignored)."""
        if self.dataset != "voc" and not (is_default(self, "train_split") and is_default(self, "test_split")):
            raise ValueError(
                f"data.train_split / test_split name VOC split files; with data.dataset={self.dataset} "
                "the splits are the folders root/train and root/val"
            )
        if self.preprocess in ("torchvision", "caffe") and not is_default(self, "normalize"):
            raise ValueError(
                f"data.normalize applies to a convention computed from the data; "
                f"data.preprocess={self.preprocess} is a fixed preset"
            )
        if (
            self.preprocess in ("torchvision", "caffe")
            and self.dataset == "fashion-mnist"
            and not self.grey_to_rgb
        ):
            raise ValueError(
                f"data.preprocess={self.preprocess} is a 3-channel convention; Fashion-MNIST is grey "
                "(set data.grey_to_rgb=true)"
            )
        if self.grey_to_rgb and self.dataset != "fashion-mnist":
            raise ValueError("data.grey_to_rgb applies to Fashion-MNIST only (photographs are read as RGB)")
        if self.augment == "torchvision" and self.jittered:
            raise ValueError(
                "data.scale=[Smin, Smax] jitters the paper's crops; data.augment=torchvision draws "
                "RandomResizedCrop instead (give one S: it sets the held-out Q)"
            )

    @property
    def jittered(self) -> bool:
        return len(self.scale) == 2 and self.scale[0] != self.scale[1]

    @property
    def eval_scale(self) -> int:
        """Q used for held-out evaluation (paper: Q = S, or 384 for [256, 512] jittering)."""
        if self.test_scale:
            return self.test_scale
        return (self.scale[0] + self.scale[-1]) // 2


PLATEAU_KEYS = ("lr_factor", "patience", "plateau_window", "max_reductions")  # the plateau rule's


def check_schedule_keys(optim: OptimConfig) -> None:
    """Keys the resolved schedule never reads are refused: warm-up with the plateau rule, the
    plateau rule's keys with cosine (the message names the schedule ``auto`` chose)."""
    if optim.schedule != "cosine" and not is_default(optim, "warmup_epochs"):
        raise ValueError(
            f"optim.warmup_epochs applies to optim.schedule=cosine only (this run: {optim.schedule})"
        )
    plateau = [f"optim.{k}" for k in PLATEAU_KEYS if not is_default(optim, k)]
    if optim.schedule == "cosine" and plateau:  # the cosine schedule reads none of them
        raise ValueError(
            f"{', '.join(plateau)} apply to optim.schedule=plateau only (this run: cosine; set "
            "optim.schedule=plateau to use the paper's rule)"
        )


@dataclass
class OptimConfig:
    # 0: the paper's rates, 0.01 for a new net and 0.001 for one fine-tuned from train.init_from
    # (its fine-tuning stages); above 1000 is a typo, not a rate
    lr: float = spec(0.0, lo=0, hi=1000)
    momentum: float = spec(0.9, lo=0, lt=1)
    weight_decay: float = spec(5e-4, lo=0, hi=1)
    decay_biases: bool = False  # L2 on conv/FC weights only (Caffe's decay_mult 0 on biases and BN)
    batch_size: int = spec(256, lo=1, hi=1_000_000)  # global batch, summed over ranks
    micro_batch: int = spec(0, lo=0, hi=1_000_000)  # per-step batch per rank (< batch: accumulation)
    lr_factor: float = spec(0.1, gt=0, lt=1)
    patience: int = spec(1, lo=1, hi=1000)  # epochs without held-out improvement before lr / 10
    # held-out epochs whose mean accuracy the plateau rule compares (1: single epochs, the paper's
    # rule; more where one epoch's accuracy on a small held-out split is noisier than its gains)
    plateau_window: int = spec(1, lo=1, hi=100)
    max_reductions: int = spec(3, lo=0, hi=100)  # the paper divided it three times, then stopped
    # plateau: the paper's rule; cosine: warm-up, then to 0 at train.epochs; auto: plateau from
    # scratch, cosine to fine-tune from train.init_from (a few hundred photos hold out too few for
    # the plateau rule: docs/FINETUNE.md)
    schedule: str = spec("auto", choices=("auto", "plateau", "cosine"))
    warmup_epochs: float = spec(1.0, lo=0, hi=10_000)  # cosine only
    # linear: lr is for a batch of lr_base_batch; the run's rate is lr * batch_size / lr_base_batch,
    # reached by a linear ramp from lr over scaling_warmup_epochs (Goyal et al. 2017)
    lr_scaling: str = spec("none", choices=("none", "linear"))
    lr_base_batch: int = spec(256, lo=1, hi=1_000_000)  # the paper's batch
    scaling_warmup_epochs: float = spec(5.0, lo=0, hi=10_000)

    def __post_init__(self) -> None:
        check(self, "optim")
        keys = ("lr_base_batch", "scaling_warmup_epochs")
        scaling = [f"optim.{k}" for k in keys if not is_default(self, k)]
        if scaling and self.lr_scaling == "none":
            raise ValueError(f"{', '.join(scaling)} apply with optim.lr_scaling=linear only")
        if self.schedule != "auto":  # auto: checked once it is resolved (finetune.adopt_source)
            check_schedule_keys(self)
        if self.micro_batch > self.batch_size:
            raise ValueError(
                f"optim.micro_batch {self.micro_batch} exceeds optim.batch_size {self.batch_size}"
            )


@dataclass
class TrainConfig:
    epochs: int = spec(74, lo=1, hi=1_000_000)  # upper bound; the schedule usually stops earlier
    seed: int = spec(0, lo=0, hi=2**32 - 1)
    device: str = spec("auto", pattern=DEVICE_PATTERN)
    # auto: bf16 where native; fp32 is IEEE on GPUs too; tf32 asked for (Ampere+); numerics.py
    precision: str = spec("auto", choices=("auto", "bf16", "tf32", "fp32"))
    # memory format of the training net: auto = channels_last on a GPU and on CPUs with native
    # bf16, NCHW on AVX2-only CPUs (oneDNN's NHWC backward was 14% slower there; experiments/bench_notes.md)
    channels_last: str = spec("auto", choices=("auto", "true", "false"))
    # Winograd F(4x4, 3x3) convs (models/winograd.py): auto = on CPUs without native bf16 when
    # training in fp32 (the fp32 step there is at the matmul limit; fewer products are what is left)
    winograd: str = spec("auto", choices=("auto", "true", "false"))
    compile: bool = False
    # true: cuDNN's autotuning off and torch's deterministic kernels on (a warning names an op
    # that has none), so a CUDA run and its resume repeat exactly, at some speed; CPU runs
    # already do with the same thread count
    deterministic: bool = False
    out_dir: str = spec(
        "runs/default", pattern=r".*\S.*", words="a folder (not empty)"
    )  # not empty: "" would be the working directory
    resume: bool = True  # continue from out_dir's last checkpoint if there is one
    init_from: str = spec(
        "", words="a checkpoint path, or empty"
    )  # fine-tune from this checkpoint (e.g. S=384 from S=256, new classes allowed)
    max_steps: int = spec(0, lo=0)  # stop after this many optimiser steps (0: no limit); smoke runs
    checkpoint_every: int = spec(0, lo=0)  # also checkpoint every N optimiser steps (0: per epoch)
    # false: one checkpoint, when training ends (benchmark and smoke runs of big nets, where each
    # epoch's save is most of the time); a run killed before then starts over
    save_epochs: bool = True
    save_init: bool = False  # also keep checkpoints/init.safetensors: the weights before step 1
    eval_test: bool = True  # report test error at the end (never used for decisions)
    on_nonfinite: str = spec("stop", choices=("stop", "skip"))

    def __post_init__(self) -> None:
        check(self, "train")


@dataclass
class FinetuneConfig:
    """How a net started from ``train.init_from`` is trained (every key needs one)."""

    # which layers train: all | fc (FC6-FC8; the conv body frozen) | fc8 (a linear probe on FC7)
    layers: str = spec("all", choices=("all", "fc", "fc8"))
    head_lr_mult: float = spec(1.0, gt=0, hi=1000)  # FC8's rate is optim.lr times this
    # _bn nets: train = batch statistics as in training (updated); frozen = the source's running
    # statistics, never updated (every batch norm runs as in evaluation)
    bn: str = spec("train", choices=("train", "frozen"))
    head_std: float = spec(0.01, gt=0, hi=1)  # a new FC8 (another label set): N(0, std^2), zero bias

    def __post_init__(self) -> None:
        check(self, "finetune")


@dataclass
class DistConfig:
    """How data-parallel ranks exchange gradients (runs under torchrun; docs/SCALING.md)."""

    # fp32: DDP's all-reduce; fp16/bf16: gradients cast for the all-reduce (half the bytes);
    # powersgd: rank-r PowerSGD with error feedback (Vogels et al. 2019) after powersgd_start steps
    grad_comm: str = spec("fp32", choices=("fp32", "fp16", "bf16", "powersgd"))
    powersgd_rank: int = spec(4, lo=1, hi=1024)
    powersgd_start: int = spec(100, lo=2, hi=10**9)  # plain all-reduce before: PowerSGD's warm-up
    bucket_mb: float = spec(25.0, gt=0, hi=4096)  # DDP's bucket_cap_mb: gradients per all-reduce
    gradient_as_bucket_view: bool = False  # gradients live in DDP's buckets: one copy less memory

    def __post_init__(self) -> None:
        check(self, "dist")
        if self.grad_comm != "powersgd":
            changed = [f"dist.{k}" for k in ("powersgd_rank", "powersgd_start") if not is_default(self, k)]
            if changed:
                raise ValueError(f"{', '.join(changed)} apply with dist.grad_comm=powersgd only")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        changed = [
            f"finetune.{f.name}"
            for f in dataclasses.fields(self.finetune)
            if not is_default(self.finetune, f.name)
        ]
        if changed and not self.train.init_from:
            raise ValueError(f"{', '.join(changed)} apply with train.init_from (a checkpoint to fine-tune)")
        crop = self.model.crop_size
        for what, s in [("data.scale", v) for v in self.data.scale] + [
            ("data.test_scale", self.data.test_scale)
        ]:
            if s and s < 224:  # paper units: S = 224 is the crop itself, at any crop size
                raise ValueError(
                    f"{what} {s} (paper units, {round(s * crop / 224)} px at crop {crop}) is smaller than "
                    "the crop: S and Q must be >= 224"
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved config as a TOML file (loadable with ``--config``), each key with its range."""
        sections = []
        for section in dataclasses.fields(self):
            sub = getattr(self, section.name)
            lines = [f"[{section.name}]"]
            for f in dataclasses.fields(sub):
                v = getattr(sub, f.name)
                text = str(v).lower() if isinstance(v, bool) else json.dumps(v)
                lines.append(f"{f.name} = {text}  # {describe(f)}")
            sections.append("\n".join(lines))
        return "\n\n".join(sections) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        sections = {}
        unknown_sections = set(d) - set(_TYPES)
        if unknown_sections:
            raise ValueError(f"unknown section(s) {sorted(unknown_sections)}; known: {list(_TYPES)}")
        for f in dataclasses.fields(cls):
            sub_cls = _TYPES[f.name]
            values = d.get(f.name, {})
            if not isinstance(values, dict):  # `model = 3` or `[[model]]` in the TOML
                raise ValueError(f"[{f.name}] must be a table of keys, got {type(values).__name__}")
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
            try:
                with p.open("rb") as fh:
                    d = tomllib.load(fh)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"config file {p} is not valid TOML: {e}") from None
        for item in overrides:
            key, sep, raw = item.partition("=")
            section, _, name = key.strip().partition(".")
            if not sep or not name or section not in _TYPES:
                raise ValueError(
                    f"--set expects section.key=value with section in {list(_TYPES)}, got {item!r}"
                )
            d.setdefault(section, {})[name] = _coerce(section, name, raw.strip())
        return cls.from_dict(d)


_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "finetune": FinetuneConfig,
    "dist": DistConfig,
}


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
    raise ValueError(f"{key} expects {_what(hint)}, got {value!r}")


def _what(hint: object) -> str:
    """A field type in words: ``float``, ``a list of int such as [256, 512]``."""
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__} such as [256, 512]"
    return getattr(hint, "__name__", str(hint))


def _coerce(section: str, name: str, raw: str) -> object:
    """Parse ``raw`` as the field's type: numbers, bools, lists (``[256, 512]`` or ``256,512``),
    or plain strings. Errors name the key as it was typed (``data.scale``)."""
    hints = typing.get_type_hints(_TYPES[section])
    key = f"{section}.{name}"
    if name not in hints:
        raise ValueError(f"unknown key {key!r} (`verydeep train --print-config` lists them all)")
    hint = hints[name]
    if hint is str:
        return raw
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} expects true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"{key} expects {_what(hint)}, got {raw!r}") from None
    if typing.get_origin(hint) is list and isinstance(value, tuple):  # 256,512 reads as a tuple
        value = list(value)
    if hint is float and isinstance(value, int):
        value = float(value)
    return value
