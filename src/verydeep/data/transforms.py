"""The paper's geometric augmentation, as small pure callables.

Training (Section 3.1): isotropic rescale so the smallest side is S (fixed, or drawn per image
from [Smin, Smax]), one random crop of the crop size, random horizontal flip. Testing: rescale
to Q, then (for held-out monitoring) a centre crop. The colour shift and mean subtraction are
done on the batch, on the device (``preprocess.py``).

Two equivalent paths: PIL images from files (``TrainTransform``/``CentreCropTransform``, run in
DataLoader workers) and in-memory uint8 tensors (``scale_crop_flip``: one ``grid_sample`` for the
whole batch, exact bilinear rescale-then-crop, used for Fashion-MNIST).

Example:
    >>> import torch
    >>> from verydeep.data.transforms import scale_crop_flip
    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> zero = torch.tensor([0])
    >>> scale_crop_flip(x, 4, torch.tensor([4]), zero, zero, torch.tensor([True]))[0, 0, 0]
    tensor([3, 2, 1, 0], dtype=torch.uint8)
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
import torchvision.transforms as T1
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .images import MAX_PIXELS, BadImageError


def rescale_smallest(img: Image.Image | torch.Tensor, side: int) -> Image.Image | torch.Tensor:
    """Isotropic rescale so that the smaller side equals ``side`` (bilinear, antialiased); a
    result beyond ``MAX_PIXELS`` is a ``BadImageError`` (no allocation is attempted)."""
    w, h = img.size if isinstance(img, Image.Image) else (img.shape[-1], img.shape[-2])
    new_h, new_w = rescaled_size(h, w, side)
    if new_w * new_h > MAX_PIXELS:
        raise BadImageError(f"{w}x{h} image rescaled to {new_w}x{new_h} is beyond the pixel limit")
    return TF.resize(img, side, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


class TrainTransform:
    """PIL image -> uint8 (C, crop, crop): rescale to S ~ U{Smin..Smax}, random crop, flip.

    Only the crop is resampled: PIL's ``resize(box=...)`` computes the crop's pixels of the
    rescaled image directly (same filter, same scale, same source pixels near the box edges), so
    the result equals rescale-then-crop while costing crop^2 instead of S^2 output pixels.
    """

    def __init__(
        self, scale: tuple[int, int], crop: int, flip: bool = True, tensor_input: bool = False
    ) -> None:
        if scale[0] < crop:
            raise ValueError(f"training scale {scale[0]} px is smaller than the crop {crop} px")
        self.scale, self.crop, self.flip = scale, crop, flip
        self.min_side = scale[1]  # JPEG DCT-domain decoding may shrink down to this side
        # tensor_input: datasets decode to uint8 tensors (load_image_tensor), see _call_tensor
        self.tensor_input = tensor_input

    def draw_scale(self) -> int:
        """S ~ U{Smin..Smax}, drawn before decoding so a big JPEG is decoded only as large as
        this S needs (``ImageFolderDataset``); the draws then go on in the same order."""
        return random.randint(self.scale[0], self.scale[1])

    def __call__(self, img: Image.Image | torch.Tensor, s: int | None = None) -> torch.Tensor:
        s = self.draw_scale() if s is None else s
        if isinstance(img, torch.Tensor):
            return self._call_tensor(img, s)
        h, w = rescaled_size(img.height, img.width, s)
        top = random.randint(0, h - self.crop)
        left = random.randint(0, w - self.crop)
        fx, fy = img.width / w, img.height / h  # source pixels per rescaled pixel
        box = (
            left * fx,
            top * fy,
            min((left + self.crop) * fx, img.width),
            min((top + self.crop) * fy, img.height),
        )
        img = img.resize((self.crop, self.crop), Image.Resampling.BILINEAR, box=box)
        if self.flip and random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return TF.pil_to_tensor(img)

    def _call_tensor(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """Same draws on a uint8 (C, H, W) tensor; the crop's source window is cut at whole pixels.

        torch's antialiased uint8 resize is ~3x faster than PIL's, but takes no sub-pixel box:
        the window's position and size differ from rescale-then-crop by under one source pixel.
        """
        h0, w0 = x.shape[-2:]
        h, w = rescaled_size(h0, w0, s)
        top, left = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        fx, fy = w0 / w, h0 / h
        y0, x0 = min(round(top * fy), h0 - 1), min(round(left * fx), w0 - 1)
        y1, x1 = (
            min(max(y0 + 1, round((top + self.crop) * fy)), h0),
            min(max(x0 + 1, round((left + self.crop) * fx)), w0),
        )
        window = x[None, :, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last)
        out = F.interpolate(
            window, size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False
        )[0]
        if self.flip and random.random() < 0.5:
            out = out.flip(-1)
        return out.contiguous()


class RandomResizedCropTransform:
    """torchvision's reference recipe (not the paper's): uint8 (C, H, W) -> a random region of
    8-100% of the area and aspect 3/4-4/3 (``RandomResizedCrop.get_params``), resized to the crop
    (bilinear, antialiased), random flip. ``data.augment = "torchvision"`` selects it."""

    tensor_input = True
    min_side = None  # a small region needs the full-resolution image: no draft decoding

    def __init__(self, crop: int, flip: bool = True, area: tuple[float, float] = (0.08, 1.0)) -> None:
        self.crop, self.flip, self.area = crop, flip, area

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        top, left, h, w = T1.RandomResizedCrop.get_params(x, list(self.area), [3 / 4, 4 / 3])
        out = TF.resized_crop(x, top, left, h, w, [self.crop, self.crop], antialias=True)
        if self.flip and random.random() < 0.5:
            out = out.flip(-1)
        return out.contiguous()


class CentreCropTransform:
    """PIL image -> uint8 (C, crop, crop): rescale to Q, centre crop (held-out monitoring)."""

    def __init__(self, q: int, crop: int) -> None:
        self.q, self.crop, self.min_side = q, crop, q

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return TF.pil_to_tensor(TF.center_crop(rescale_smallest(img, self.q), [self.crop, self.crop]))


def rescaled_size(h: int, w: int, s: int, round_to: int | None = None) -> tuple[int, int]:
    """(H, W) after an isotropic rescale to smallest side ``s``. The long side is truncated, as
    torchvision's ``Resize`` computes it, or with ``round_to`` rounded to the nearest multiple
    of it, never below ``s`` (descriptor passes use 32, so photos share size buckets)."""
    short, long = min(h, w), max(h, w)
    if round_to is None:
        new_long = int(s * long / short)
    else:
        new_long = max(s, round(long * s / short / round_to) * round_to)
    return (s, new_long) if h <= w else (new_long, s)


def scale_crop_flip(
    x: torch.Tensor,
    crop: int,
    scales: torch.Tensor,
    tops: torch.Tensor,
    lefts: torch.Tensor,
    flips: torch.Tensor,
) -> torch.Tensor:
    """Batched rescale-to-S + crop + flip of same-size images with one ``grid_sample``.

    ``scales`` (N,): target smallest side S in pixels; ``tops``/``lefts`` (N,): the crop's
    corner in whole pixels of the rescaled image; ``flips`` (N,) bool. Output pixel (i, j)
    samples the rescaled image at (top + i + 0.5, left + j + 0.5), exactly as resizing
    bilinearly (no antialiasing: meant for upscaling small images) and then cropping.
    """
    n, _, h, w = x.shape
    size = torch.tensor([rescaled_size(h, w, int(s)) for s in scales.tolist()], dtype=torch.float32)
    fh, fw = size[:, 0] / h, size[:, 1] / w  # rescale factors per image and axis
    theta = torch.zeros(n, 2, 3)
    ax, ay = crop / (fw * w), crop / (fh * h)
    theta[:, 0, 0] = torch.where(flips.bool(), -ax, ax)
    theta[:, 1, 1] = ay
    theta[:, 0, 2] = 2 * lefts.float() / (fw * w) - 1 + ax
    theta[:, 1, 2] = 2 * tops.float() / (fh * h) - 1 + ay
    grid = F.affine_grid(
        theta.to(x.device, non_blocking=True), [n, x.shape[1], crop, crop], align_corners=False
    )
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_crop_params(
    n: int, hw: tuple[int, int], scale: tuple[int, int], crop: int, flip: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: S ~ U{Smin..Smax}, a crop corner uniform over all positions, a fair flip."""
    scales = torch.randint(scale[0], scale[1] + 1, (n,))
    size = torch.tensor([rescaled_size(*hw, int(s)) for s in scales.tolist()])
    tops = (torch.rand(n) * (size[:, 0] - crop + 1)).floor().long()
    lefts = (torch.rand(n) * (size[:, 1] - crop + 1)).floor().long()
    flips = torch.rand(n) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return scales, tops, lefts, flips


def centre_crop_params(n: int, hw: tuple[int, int], q: int, crop: int) -> tuple[torch.Tensor, ...]:
    """Scale Q and the corner torchvision's ``CenterCrop`` uses (Python's round of half the margin)."""
    h, w = rescaled_size(*hw, q)
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    return (
        torch.full((n,), q),
        torch.full((n,), top),
        torch.full((n,), left),
        torch.zeros(n, dtype=torch.bool),
    )
