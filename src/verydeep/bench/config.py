"""What ``verydeep bench`` measures, and the speed targets it checks.

Example:
    >>> from verydeep.bench.config import BenchConfig
    >>> BenchConfig.make(quick=True).model_kwargs["crop_size"]
    32
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

PARTS = ("inference", "training", "perceptual", "comm", "lrn", "precision", "eval", "data", "features")
PHOTO_PARTS = {"precision", "eval", "data", "features"}  # these read the user's photographs (--data DIR)

# minimum ratios (verydeep over torchvision, or as named), set for the 2-core CPU machine
TARGETS = {
    "inference": 2.5,  # images/s, best verydeep mode over torchvision eager fp32 (batch 8)
    "training": 2.0,  # training steps/s, same comparison
    "perceptual": 1.5,  # perceptual-loss steps/s (VGG-16 to relu4_3, input gradient), same comparison
    "data": 1.8,  # images/s per core of the training transform
    "eval_dense_vs_crops": 5.0,  # 150-crop cost over dense 3-scale+flip cost, per image
    "fraction_of_peak": 0.75,  # VGG-16 inference GFLOP/s over measured matmul GFLOP/s, same dtype
}
# where the hardware has no native bf16 (AVX2-only CPUs): int8 carries inference, and
# fp32 training is bounded by the fp32 matmul rate that torchvision's step already nearly reaches
NO_BF16_TARGETS = TARGETS | {"inference": 1.8, "training": 1.3, "perceptual": 1.2}


# GPUs: the baseline is torchvision's eager fp32 step with PyTorch's defaults (cuDNN's TF32
# convolutions), which already reaches a large share of the tensor cores, and convolutions reach
# less of the matmul peak than a CPU's do. Set before any GPU run here; the first one revises them.
GPU_TARGETS = TARGETS | {"inference": 1.8, "training": 1.8, "perceptual": 1.5, "fraction_of_peak": 0.5}

# sizes per device: a GPU needs batches that fill it and a matmul large enough to reach its peak
SIZES = {
    "cpu": {"batches": (8, 1), "train_batch": 16, "matmul_n": 2048},
    "cuda": {"batches": (64, 1), "train_batch": 64, "matmul_n": 8192},
}


def targets_for(native_bf16: bool, device_type: str = "cpu") -> dict[str, float]:
    """The targets of this hardware class."""
    if device_type == "cuda":
        return GPU_TARGETS
    return TARGETS if native_bf16 else NO_BF16_TARGETS


@dataclass
class BenchConfig:
    quick: bool = False  # tiny nets and few images: seconds, for tests; numbers mean nothing
    arch: str = "D"
    model_kwargs: dict = field(default_factory=dict)
    # 0 / (): per device (SIZES). Inference batch sizes, the first the headline; the training
    # batch (the paper's is 256; 16 keeps a CPU step to seconds, 4 is per-step-cost bound); the
    # matmul whose rate is the peak the nets are measured against
    batches: tuple[int, ...] = ()
    train_batch: int = 0
    matmul_n: int = 0
    rounds: int = 3  # interleaved samples per variant; the report uses the median
    compile: bool = True  # also try torch.compile (inductor, freezing) for inference
    data_root: Path | None = None  # an ImageFolder of photographs (class folders); None: skip those parts
    data_images: int = 128  # photographs per data-pipeline round (64 let two 5-Mpx photos weigh 20%)
    data_rounds: int = 7  # the data part is cheap (seconds a round) and its rounds swing by 20%
    features_images: int = 8  # photos per feature-extraction round (full-size net: 1-4 s each on 2 cores)
    precision_images: int = 500  # photos the precision part compares modes on (32 others calibrate int8)
    checkpoint: Path | None = None  # a trained net for the precision part (skipped without one)
    eval_images: int = 1  # per round; rounds pair the two methods (load drifts in ~1 min)
    eval_scales: tuple[int, ...] = (256, 384, 512)  # paper units (Q at crop 224)
    train_scale: tuple[int, int] = (256, 512)  # S jitter, paper units
    device: str = "auto"
    profile: bool = True  # profile the fast variant of any part that misses its target
    all_modes: bool = False  # also time bf16 where it is emulated (AVX2-only CPUs: ~7x slower)

    @classmethod
    def make(cls, quick: bool = False, **overrides) -> BenchConfig:
        if quick:
            tiny = {"width_mult": 1 / 16, "fc_width": 64, "crop_size": 32, "num_classes": 10}
            base = cls(quick=True, model_kwargs=tiny, batches=(4, 1), train_batch=4, rounds=2)
            base.compile, base.profile, base.matmul_n, base.data_images = False, False, 256, 6
            base.data_rounds, base.features_images = 2, 6
            base.precision_images, base.eval_images = 6, 1
        else:
            base = cls(model_kwargs={"num_classes": 1000})
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base

    def sized_for(self, device_type: str) -> BenchConfig:
        """A copy with every per-device size not set filled in from ``SIZES``."""
        sizes = SIZES["cuda" if device_type == "cuda" else "cpu"]
        return dataclasses.replace(self, **{k: v for k, v in sizes.items() if not getattr(self, k)})

    @property
    def crop(self) -> int:
        return self.model_kwargs.get("crop_size", 224)
