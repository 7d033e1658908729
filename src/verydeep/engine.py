"""One epoch of training and one pass of held-out evaluation. Objects in, numbers out.

The loop owns what the paper specifies about an SGD iteration: a (possibly accumulated) global
batch, a loss, the step, and nothing else. Augmentation and normalisation arrive as ``prepare``,
a callable on the device batch, so the same loop serves in-memory tensors and image files; the
loss arrives as ``criterion`` (multinomial logistic loss by default; the box nets of Appendix A
pass their Euclidean loss), so classification and box regression train on one loop, with one
non-finite check, one precision choice and one progress hook.

Example:
    >>> import torch
    >>> from verydeep.engine import validate
    >>> from verydeep.models.vgg import VGG
    >>> net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> batches = [(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]))]
    >>> sorted(validate(net, batches, lambda x: x.float(), torch.device("cpu")))
    ['images', 'loss', 'top1_err', 'top5_err']
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .meters import EpochSums, Errors, Meter, NonFiniteLossError, StepState
from .numerics import FP32, Numerics

# the loss of a micro-batch: (outputs in fp32, targets) -> a scalar, the mean over the micro-batch
Criterion = Callable[[torch.Tensor, Any], torch.Tensor]

__all__ = [  # the loop's state and its error are meters.py's, named here too
    "Criterion",
    "EpochSums",
    "NonFiniteLossError",
    "StepState",
    "match_layout",
    "softmax_loss",
    "to_device",
    "top1_wrong",
    "topk_errors",
    "train_one_epoch",
    "validate",
]


def topk_errors(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is not among the top-k scores, k clipped to #classes."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return [int((~hit[:, : min(k, kmax)].any(1)).sum()) for k in ks]


def softmax_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multinomial logistic loss, the mean over the micro-batch: the paper's, and the default
    criterion. A micro-batch whose images were all unreadable gives a zero loss that still reaches
    every parameter: every rank and the accumulation count stay in step, and DDP's all-reduce is
    not left waiting."""
    return F.cross_entropy(logits, labels) if len(labels) else logits.sum() * 0


def top1_wrong(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The number of samples whose top-scoring class is not the label, on the device."""
    return (logits.argmax(1) != labels).sum()


def to_device(targets: Any, device: torch.device) -> Any:
    """The tensors of ``targets`` (a tensor, or a tuple, list or dict of them, nested) on ``device``;
    anything else as it is."""
    if torch.is_tensor(targets):
        return targets.to(device, non_blocking=True)
    if isinstance(targets, dict):
        return {k: to_device(v, device) for k, v in targets.items()}
    if isinstance(targets, tuple) and hasattr(targets, "_fields"):  # a namedtuple
        return type(targets)(*(to_device(v, device) for v in targets))
    if isinstance(targets, (list, tuple)):
        return type(targets)(to_device(v, device) for v in targets)
    return targets


def _apply_step(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """The optimiser step unless ``bad``: on the device for a fused optimiser (its kernel skips
    the whole update, momentum included, when ``found_inf`` is set), else decided on the host."""
    if all(g.get("fused") for g in optimizer.param_groups):
        _zero_momentum(optimizer)
        optimizer.found_inf = bad  # type: ignore[attr-defined]
        optimizer.step()
    elif not bool(bad):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Zero momentum buffers for parameters that have none yet. Fused SGD makes them with
    ``empty_like`` on its first step and fills them in the kernel, so a first step skipped by
    ``found_inf`` would leave them uninitialised memory. From zeros, with dampening 0, the first
    update is the same (buf = 0.9 * 0 + grad)."""
    for group in optimizer.param_groups:
        if not group.get("momentum") or group.get("dampening"):
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if p.grad is not None and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p)


def match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every optimiser state tensor its parameter's memory layout. A loaded state keeps
    the layout it was saved in: an NCHW checkpoint resumed channels_last (a CPU run resumed on
    a GPU) would otherwise mix layouts in every update."""
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _forward_backward(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    *,
    criterion: Criterion,
    accum_steps: int,
    all_reduce: bool,
    numerics: Numerics,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch: its loss and the net's outputs (in fp32, as the criterion saw them); the
    loss's gradient / ``accum_steps`` is added to the parameters'. Under DDP the gradients are
    all-reduced only where ``all_reduce`` (the step's last micro-batch)."""
    sync = contextlib.nullcontext() if all_reduce or not hasattr(model, "no_sync") else model.no_sync()
    with sync:
        with numerics.context(x.device):
            outputs = model(x).float()  # the loss in fp32 whatever the arithmetic of the net
            loss = criterion(outputs, targets)
        (loss / accum_steps).backward()
    return loss, outputs


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, Any]],
    optimizer: torch.optim.Optimizer,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    state: StepState,
    criterion: Criterion = softmax_loss,
    errors: Errors | None = top1_wrong,
    accum_steps: int = 1,
    numerics: Numerics = FP32,
    on_nonfinite: str = "stop",
    on_step: Callable[[StepState, dict, int], None] | None = None,
    max_steps: int = 0,
    sync_every: int = 1,
    main: bool = True,
    set_lr: Callable[[int], None] | None = None,
    train_mode: Callable[[nn.Module], None] | None = None,
) -> dict:
    """Run the optimiser steps of one epoch (from ``state.step_in_epoch`` on).

    ``batches`` yields micro-batches (images, targets); every ``accum_steps`` of them make one
    optimiser step. The targets may be any tensor, tuple, list or dict of tensors: they are moved
    to ``device`` and given, with the net's fp32 outputs, to ``criterion`` (default: multinomial
    logistic loss on class labels). ``errors(outputs, targets)`` counts a micro-batch's wrong
    predictions (default: top-1 on class labels); pass None with a criterion that is not
    classification's, and the result has no ``top1_err``.
    ``model`` may be wrapped in DistributedDataParallel: gradient all-reduce then happens only
    on the last micro-batch of a step. A step with a NaN/inf loss or gradient is never applied;
    ``on_nonfinite="stop"`` then raises at the next sync. The host reads the running numbers
    every ``sync_every`` global steps and at the end, then calls ``on_step(state, metrics,
    steps_since_last_call)`` (progress, mid-epoch checkpoints: keep their interval a multiple).
    ``main``: this is rank 0, which carries a resumed epoch's sums. ``set_lr(global_step)`` is
    called after every step (a per-step schedule). ``train_mode(model)`` puts the net in training
    mode (default ``model.train()``; a fine-tune leaves frozen layers as in evaluation). Returns
    the whole epoch's mean loss, top-1 error and images/s (over all ranks).
    """
    (train_mode or nn.Module.train)(model)
    meter, micro, since = Meter(device, state, main, errors), 0, 0
    if max_steps and state.global_step >= max_steps:  # e.g. resumed from the final checkpoint
        batches = []
    for images, targets in batches:
        images, targets = images.to(device, non_blocking=True), to_device(targets, device)
        last_micro = (micro + 1) % accum_steps == 0
        loss, outputs = _forward_backward(
            model,
            prepare(images),
            targets,
            criterion=criterion,
            accum_steps=accum_steps,
            all_reduce=last_micro,
            numerics=numerics,
        )
        micro += 1
        meter.add(loss, outputs.detach(), targets, len(images))
        if not last_micro:
            continue
        _apply_step(optimizer, meter.found_inf(model, loss, state.global_step))
        state.step_in_epoch, state.global_step, since = (
            state.step_in_epoch + 1,
            state.global_step + 1,
            since + 1,
        )
        if set_lr is not None:
            set_lr(state.global_step)
        done = bool(max_steps) and state.global_step >= max_steps
        if state.global_step % sync_every == 0 or done:
            metrics = meter.sync(state, on_nonfinite)
            if on_step is not None:
                on_step(state, metrics, since)
            since = 0
        if done:
            break
    if micro % accum_steps:  # trailing micro-batches that do not fill a step: dropped, not carried over
        optimizer.zero_grad(set_to_none=True)
    metrics = meter.sync(state, on_nonfinite)
    if on_step is not None and since:
        on_step(state, metrics, since)
    return metrics


@torch.inference_mode()
def validate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    numerics: Numerics = FP32,
) -> dict:
    """Mean loss, top-1 and top-5 error over ``batches`` (centre crops, FC form). The sums stay
    on the device and are read once, at the end (a per-batch read would stall a GPU each batch)."""
    model.eval()
    sums, n = torch.zeros(3, dtype=torch.float64, device=device), 0  # loss, top-1 and top-5 misses
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with numerics.context(device):
            logits = model(prepare(images)).float()
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), *_misses(logits, labels)])
        n += len(labels)
    loss, e1, e5 = sums.tolist()
    n = max(n, 1)
    return {"loss": loss / n, "top1_err": e1 / n, "top5_err": e5 / n, "images": n}


def _misses(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """``topk_errors`` as device tensors (nothing read back)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return [(~hit[:, :k].any(1)).sum().double() for k in ks]
