"""One epoch of training and one pass of held-out evaluation. Objects in, numbers out.

The loop owns what the paper specifies about an SGD iteration: a (possibly accumulated) global
batch, multinomial logistic loss, and nothing else. Augmentation and normalisation arrive as
``prepare``, a callable on the device batch, so the same loop serves in-memory tensors and
image files.

Example:
    >>> import torch
    >>> from verydeep.engine import evaluate
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> batches = [(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]))]
    >>> sorted(evaluate(net, batches, lambda x: x.float(), torch.device("cpu")))
    ['images', 'loss', 'top1_err', 'top5_err']
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN/inf."""


@dataclass
class StepState:
    """Counters that survive an interruption (saved with every checkpoint)."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimiser steps already taken in ``epoch``
    global_step: int = 0
    skipped_steps: int = 0
    bad_images: int = 0  # unreadable training images skipped so far
    best_step: int = -1  # the global step whose weights best.safetensors holds (-1: none yet)
    history: list[dict] = field(default_factory=list)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def topk_errors(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is not among the top-k scores, k clipped to #classes."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return [int((~hit[:, : min(k, kmax)].any(1)).sum()) for k in ks]


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    state: StepState,
    accum_steps: int = 1,
    amp_dtype: torch.dtype | None = None,
    on_nonfinite: str = "stop",
    on_step: Callable[[StepState, dict], None] | None = None,
    max_steps: int = 0,
) -> dict:
    """Run the optimiser steps of one epoch (from ``state.step_in_epoch`` on).

    ``batches`` yields micro-batches; every ``accum_steps`` of them make one optimiser step.
    ``model`` may be wrapped in DistributedDataParallel: gradient all-reduce then happens only
    on the last micro-batch of a step. ``on_step`` is called after each step (progress,
    mid-epoch checkpoints). Returns mean loss, top-1 error and images/s of this epoch.
    """
    model.train()
    loss_sum, err_sum, seen, t0 = 0.0, 0, 0, time.perf_counter()
    micro = 0
    if max_steps and state.global_step >= max_steps:  # e.g. resumed from the final checkpoint
        batches = []
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        last_micro = (micro + 1) % accum_steps == 0
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, amp_dtype):
                logits = model(prepare(images))
                # a micro-batch whose images were all unreadable still runs (zero gradient): every
                # rank and the accumulation count stay in step, DDP's all-reduce is not left waiting
                loss = F.cross_entropy(logits.float(), labels) if len(labels) else logits.float().sum() * 0
            (loss / accum_steps).backward()
        micro += 1
        loss_sum += loss.item() * len(labels)
        err_sum += topk_errors(logits.detach(), labels, (1,))[0]
        seen += len(labels)
        if not last_micro:
            continue
        if _finite_step(model, loss, on_nonfinite, state):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step_in_epoch += 1
        state.global_step += 1
        if on_step is not None:
            elapsed = time.perf_counter() - t0
            on_step(state, {"loss": loss_sum / seen, "top1_err": err_sum / seen, "img_s": seen / elapsed})
        if max_steps and state.global_step >= max_steps:
            break
    if micro % accum_steps:  # trailing micro-batches that do not fill a step: dropped, not carried over
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    return {
        "loss": loss_sum / max(seen, 1),
        "top1_err": err_sum / max(seen, 1),
        "img_s": seen / max(elapsed, 1e-9),
    }


def _finite_step(model: nn.Module, loss: torch.Tensor, on_nonfinite: str, state: StepState) -> bool:
    """True if the step may be applied; a NaN/inf loss or gradient stops or skips it."""
    finite = math.isfinite(loss.item())
    if finite:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.stack([g.float().abs().sum() for g in grads]).isfinite().all()) if grads else True
    if dist.is_available() and dist.is_initialized():  # the loss is per rank: all ranks must agree
        flag = torch.tensor([int(finite)], device=loss.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag.item())
    if finite:
        return True
    if on_nonfinite == "stop":
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {state.global_step} (loss {loss.item()}); "
            "lower optim.lr or set train.on_nonfinite=skip"
        )
    state.skipped_steps += 1
    return False


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """Mean loss, top-1 and top-5 error over ``batches`` (centre crops, FC form)."""
    model.eval()
    loss_sum, errs, n = 0.0, [0, 0], 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, amp_dtype):
            logits = model(prepare(images)).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        errs = [a + b for a, b in zip(errs, topk_errors(logits, labels), strict=True)]
        n += len(labels)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1_err": errs[0] / n, "top5_err": errs[1] / n, "images": n}
