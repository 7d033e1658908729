"""The sections of a run's configuration: one dataclass per TOML table, each field with its
paper default and declared range (``ranges.spec``), each section checking its own consistency.

``RunConfig`` (``config/__init__.py``) holds one of each and reads them from TOML and ``--set``.

Example:
    >>> from verydeep.config.sections import DataConfig, pixels
    >>> DataConfig(scale=[256, 512]).jittered, pixels(256, 32)
    (True, 37)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..models.arch import parse_arch
from ..ranges import DEVICE_PATTERN, MAX_SCALE, check, spec


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
