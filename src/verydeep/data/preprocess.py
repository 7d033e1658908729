"""Input normalisation that travels with every checkpoint, and the AlexNet colour shift.

A ``Preprocess`` turns a uint8 batch (N, C, H, W) in RGB order into the net's input. Presets:
``paper`` (RGB 0-255, training-set mean subtracted), ``caffe`` (BGR 0-255, the released mean
pixel) and ``torchvision`` (RGB 0-1, ImageNet mean/std). The colour shift is applied to the float
0-255 RGB batch before normalisation, so it means the same for every preset.

Example:
    >>> import torch
    >>> from verydeep.data.preprocess import Preprocess
    >>> p = Preprocess.preset("caffe")
    >>> p(torch.full((1, 3, 2, 2), 128, dtype=torch.uint8))[0, :, 0, 0]
    tensor([24.0610, 11.2210,  4.3200])
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch

from .presets import PRESETS


@dataclass(frozen=True)
class Preprocess:
    """x -> (x * pixel_range / 255, channels reordered if bgr, - mean) / std.

    ``mean`` and ``std`` are in the net's channel order and pixel range.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    pixel_range: float = 255.0  # 255: pixels 0-255; 1: pixels 0-1
    bgr: bool = False

    @classmethod
    def preset(cls, name: str, mean: tuple[float, ...] | None = None) -> Preprocess:
        if name not in PRESETS:
            raise ValueError(f"unknown preprocessing preset {name!r}; choose from {', '.join(PRESETS)}")
        values = dict(PRESETS[name])
        if mean is not None:
            values["mean"] = tuple(float(m) for m in mean)
            values["std"] = (1.0,) * len(mean)
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The convention in words: ``RGB 0-1, mean [0.485, 0.456, 0.406], std [...]``."""
        order = "BGR" if self.bgr else "RGB"
        return f"{order} 0-{self.pixel_range:g}, mean {list(self.mean)}, std {list(self.std)}"

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(tuple(d["mean"]), tuple(d["std"]), float(d["pixel_range"]), bool(d["bgr"]))

    def __call__(self, x: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise a uint8 (or 0-255 float) RGB batch; ``colour`` (N, C) is added first.

        ((x + c) * r - mean) / std is computed as x * (r / std) - (mean - c * r) / std: one
        conversion to float32, then in-place steps, with the per-image colour folded into a
        (N, C, 1, 1) offset. (A single mixed-dtype op, uint8 minus float, is 10x slower on
        CPU: it is not vectorised.)
        """
        mean, std = _on(tuple(self.mean), x.device), _on(tuple(self.std), x.device)
        if mean.shape[1] != x.shape[1]:
            raise ValueError(f"preprocessing has {mean.shape[1]} channels, images have {x.shape[1]}")
        r = self.pixel_range / 255.0
        if self.bgr:
            x = x.flip(1)
            colour = colour.flip(1) if colour is not None else None
        y = x.to(torch.float32, copy=True)  # a new tensor: the in-place steps never touch the caller's
        offset = mean if colour is None else mean - r * colour.float()[:, :, None, None]
        if r != 1.0 or any(s != 1.0 for s in self.std):
            y.mul_(r / std)
            offset = offset / std
        return y.sub_(offset)


@dataclass(frozen=True)
class ColourPCA:
    """Principal components of the training set's RGB pixels, Krizhevsky 2012.

    The eigenvalues have squared pixel units, so the size of ``sum_i alpha_i lambda_i p_i``
    depends on the pixel scale, which the paper leaves open. We fit on pixels in [0, 1] (the
    common reading, e.g. fb.resnet.torch: ImageNet lambdas about 0.2, 0.02, 0.005) and return
    offsets in 0-255 units, a shift of a few grey levels for alpha std 0.1.
    """

    eigval: tuple[float, ...]
    eigvec: tuple[tuple[float, ...], ...]  # columns are the components p_i

    @classmethod
    def fit(cls, pixels: torch.Tensor) -> ColourPCA:
        """``pixels``: (P, C) float samples of training pixels in 0-255."""
        cov = torch.cov((pixels.double() / 255.0).T).reshape(pixels.shape[1], pixels.shape[1])
        val, vec = torch.linalg.eigh(cov)
        val = val.clamp_min(0)
        return cls(tuple(val.tolist()), tuple(tuple(r) for r in vec.tolist()))

    def sample(self, n: int, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C) RGB offsets sum_i alpha_i lambda_i p_i with alpha_i ~ N(0, std), per image."""
        val = torch.tensor(self.eigval, dtype=torch.float32)
        vec = torch.tensor(self.eigvec, dtype=torch.float32)
        alpha = torch.randn(n, len(self.eigval), generator=generator) * std
        return 255.0 * (alpha * val) @ vec.T

    def to_dict(self) -> dict:
        return {"eigval": list(self.eigval), "eigvec": [list(r) for r in self.eigvec]}

    @classmethod
    def from_dict(cls, d: dict) -> ColourPCA:
        return cls(tuple(d["eigval"]), tuple(tuple(r) for r in d["eigvec"]))


@functools.lru_cache(maxsize=64)
def _on(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """(1, C, 1, 1) of ``values`` on ``device``, made once per device: a tensor built from Python
    numbers on a GPU is a host-to-device copy that waits, at every call."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)
