"""Boxes: IoU, (cx, cy, w, h) <-> (x0, y0, x1, y1), and their path through rescale, crop, flip.

Coordinates are continuous pixel edges: a box ``(x0, y0, x1, y1)`` covers ``x0 <= x < x1``, so
a whole W x H image is ``(0, 0, W, H)`` and areas need no "+1". (PASCAL VOC's 1-based inclusive
integer corners are converted by the reader, ``voc.py``.) Every function takes ``(..., 4)``
tensors and returns new ones.

Example:
    >>> import torch
    >>> from verydeep.localization.boxes import box_iou, xyxy_to_cxcywh, flip_boxes
    >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> box_iou(a, torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
    tensor([[0.3333]])
    >>> xyxy_to_cxcywh(a)
    tensor([[1., 1., 2., 2.]])
    >>> flip_boxes(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), width=10)
    tensor([[7., 0., 9., 2.]])
"""

from __future__ import annotations

import torch


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """Corners to (centre x, centre y, width, height)."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(centre x, centre y, width, height) to corners."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes; degenerate (inverted) boxes have area 0."""
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def box_intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection areas of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of xyxy boxes: (N, 4) x (M, 4) -> (N, M); 0 where empty."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def rescale_boxes(b: torch.Tensor, fx: float, fy: float | None = None) -> torch.Tensor:
    """Boxes of an image resized by factors ``fx`` (width) and ``fy`` (height, default ``fx``).

    Exact for resizers that map pixel edges to edges (PIL, torchvision, ``align_corners=False``).
    """
    fy = fx if fy is None else fy
    return b * torch.tensor([fx, fy, fx, fy], dtype=b.dtype, device=b.device)


def crop_boxes(b: torch.Tensor, left: float, top: float) -> torch.Tensor:
    """Boxes in the frame of a crop whose top-left corner is (left, top); not clipped."""
    return b - torch.tensor([left, top, left, top], dtype=b.dtype, device=b.device)


def flip_boxes(b: torch.Tensor, width: float) -> torch.Tensor:
    """Boxes of an image of ``width`` mirrored left-right (x -> width - x; corners swap)."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([width - x1, y0, width - x0, y1], dim=-1)


def clip_boxes(b: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Boxes cut to the image ``[0, width] x [0, height]``."""
    lo = torch.zeros(4, dtype=b.dtype, device=b.device)
    hi = torch.tensor([width, height, width, height], dtype=b.dtype, device=b.device)
    return torch.minimum(torch.maximum(b, lo), hi)


def scale_crop_flip_boxes(
    b: torch.Tensor, factor: float, left: float, top: float, crop: int, flip: bool
) -> torch.Tensor:
    """What ``rescale (isotropic by factor) -> crop (left, top, crop x crop) -> flip`` does to boxes."""
    out = crop_boxes(rescale_boxes(b, factor), left, top)
    return flip_boxes(out, crop) if flip else out


def normalise(b: torch.Tensor, size: float) -> torch.Tensor:
    """Pixel boxes in a ``size`` x ``size`` crop to the unit square (the regression targets)."""
    return b / size


def visible_area(b: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Area of each box that lies inside the ``width`` x ``height`` frame."""
    return box_area(clip_boxes(b, width, height))
