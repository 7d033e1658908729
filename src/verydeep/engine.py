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
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .numerics import FP32, Numerics


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN/inf."""


@dataclass
class EpochSums:
    """The current epoch so far, saved with every checkpoint, so that a resumed epoch's log row
    and plateau decision cover the whole epoch."""

    loss: float = 0.0  # loss x images, summed over ranks (rank 0 carries a resumed epoch's part)
    wrong: float = 0.0  # top-1 errors, summed over ranks
    seen: float = 0.0  # images, summed over ranks
    seconds: float = 0.0  # training seconds (rank 0's): the denominator of img/s
    wall: float = 0.0  # wall seconds of the whole epoch (training, held-out pass, saving)
    cpu: float = 0.0  # CPU seconds of the same, decoding workers included


@dataclass
class StepState:
    """Counters that survive an interruption (saved with every checkpoint: ``to_dict``)."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimiser steps already taken in ``epoch``
    global_step: int = 0
    skipped_steps: int = 0
    bad_images: int = 0  # unreadable training images skipped so far
    best_step: int = -1  # the global step whose weights best.safetensors holds (-1: none yet)
    history: list[dict] = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StepState:
        return cls(**{**d, "sums": EpochSums(**d.get("sums", {}))})


def topk_errors(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is not among the top-k scores, k clipped to #classes."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return [int((~hit[:, : min(k, kmax)].any(1)).sum()) for k in ks]


class _Meter:
    """The epoch's running sums and non-finite flags, kept on the device: the host reads them
    only at ``sync`` (every few steps), so a GPU is never stalled by a per-step ``.item()``."""

    def __init__(self, device: torch.device, state: StepState, main: bool) -> None:
        past = state.sums
        restored = [past.loss, past.wrong, past.seen] if main else [0.0, 0.0, 0.0]  # rank 0 carries it
        self.sums = torch.tensor(restored, dtype=torch.float64, device=device)
        self.seconds, self.t0 = past.seconds, time.perf_counter()
        self.skipped = torch.zeros((), dtype=torch.float64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count a micro-batch; one with a non-finite loss (a step that is skipped) counts as
        nothing, so the epoch's loss stays the mean over the images that trained."""
        n = len(labels)
        wrong = (logits.argmax(1) != labels).sum() if n else torch.zeros((), device=labels.device)
        count = torch.full((), float(n), dtype=torch.float64, device=self.sums.device)  # no host copy
        row = torch.stack([loss.detach().double() * n, wrong.double(), count])
        self.sums += torch.where(torch.isfinite(row[0]), row, 0.0)

    def found_inf(self, model: nn.Module, loss: torch.Tensor, step: int) -> torch.Tensor:
        """1.0 if this step's loss or any gradient is NaN/inf (agreed over ranks), else 0.0."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms = torch.stack(torch._foreach_norm(grads)).float().sum() if grads else loss.new_zeros(())
        bad = (~torch.isfinite(loss.detach().float() + norms)).float().reshape(())
        if dist.is_available() and dist.is_initialized():  # the loss is per rank: all ranks must agree
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.skipped += bad
        self.first_bad = torch.where((bad > 0) & (self.first_bad < 0), step, self.first_bad)
        return bad

    def sync(self, state: StepState, on_nonfinite: str) -> dict:
        """Read the sums (summed over ranks) into ``state``; a non-finite step under ``stop``
        raises here, before anything is checkpointed (its update was skipped on the device)."""
        sums, skipped, first_bad = self.sums.clone(), int(self.skipped), int(self.first_bad)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        if skipped and on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {first_bad}; "
                "lower optim.lr or set train.on_nonfinite=skip"
            )
        state.skipped_steps += skipped
        self.skipped.zero_()
        loss, wrong, seen = sums.tolist()
        seconds = self.seconds + time.perf_counter() - self.t0
        state.sums = dataclasses.replace(state.sums, loss=loss, wrong=wrong, seen=seen, seconds=seconds)
        n = max(seen, 1)
        return {"loss": loss / n, "top1_err": wrong / n, "img_s": seen / max(seconds, 1e-9)}


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
    labels: torch.Tensor,
    *,
    accum_steps: int,
    all_reduce: bool,
    numerics: Numerics,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch: its loss and logits; the loss's gradient / ``accum_steps`` is added to the
    parameters'. Under DDP the gradients are all-reduced only where ``all_reduce`` (the step's
    last micro-batch)."""
    sync = contextlib.nullcontext() if all_reduce or not hasattr(model, "no_sync") else model.no_sync()
    with sync:
        with numerics.context(x.device):
            logits = model(x)
            # a micro-batch whose images were all unreadable still runs (zero gradient): every
            # rank and the accumulation count stay in step, DDP's all-reduce is not left waiting
            loss = F.cross_entropy(logits.float(), labels) if len(labels) else logits.float().sum() * 0
        (loss / accum_steps).backward()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    state: StepState,
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

    ``batches`` yields micro-batches; every ``accum_steps`` of them make one optimiser step.
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
    meter, micro, since = _Meter(device, state, main), 0, 0
    if max_steps and state.global_step >= max_steps:  # e.g. resumed from the final checkpoint
        batches = []
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        last_micro = (micro + 1) % accum_steps == 0
        loss, logits = _forward_backward(
            model,
            prepare(images),
            labels,
            accum_steps=accum_steps,
            all_reduce=last_micro,
            numerics=numerics,
        )
        micro += 1
        meter.add(loss, logits.detach(), labels)
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
def evaluate(
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
