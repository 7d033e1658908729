"""The counters of training: the state a checkpoint saves, and the epoch's running sums.

``StepState`` is what survives an interruption (steps taken, history, the current epoch's
sums). ``Meter`` keeps one epoch's sums and non-finite flags on the device and reads them into
the ``StepState`` every few steps. What a micro-batch counts as wrong is the caller's
``errors`` (top-1 for classification; ``None`` counts nothing, e.g. for box regression).

Example:
    >>> import torch
    >>> from verydeep.meters import Meter, StepState
    >>> state = StepState()
    >>> meter = Meter(torch.device("cpu"), state, errors=lambda out, y: (out.argmax(1) != y).sum())
    >>> meter.add(torch.tensor(0.5), torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), 2)
    >>> meter.sync(state, "stop")["top1_err"], state.sums.seen
    (0.5, 2.0)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# the number of wrong predictions in a micro-batch, as a device tensor: (outputs, targets) -> count
Errors = Callable[[torch.Tensor, Any], torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN/inf; ``step``: the first such global step, where known."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


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


class Meter:
    """The epoch's running sums and non-finite flags, kept on the device: the host reads them
    only at ``sync`` (every few steps), so a GPU is never stalled by a per-step ``.item()``.
    ``errors`` None: nothing is counted as wrong and ``sync`` reports no ``top1_err``."""

    def __init__(
        self, device: torch.device, state: StepState, main: bool = True, errors: Errors | None = None
    ) -> None:
        past = state.sums
        restored = [past.loss, past.wrong, past.seen] if main else [0.0, 0.0, 0.0]  # rank 0 carries it
        self.sums = torch.tensor(restored, dtype=torch.float64, device=device)
        self.seconds, self.t0 = past.seconds, time.perf_counter()
        self.skipped = torch.zeros((), dtype=torch.float64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.errors = errors

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: Any, n: int) -> None:
        """Count a micro-batch of ``n`` images; one with a non-finite loss (a step that is
        skipped) counts as nothing, so the epoch's loss stays the mean over the images that trained."""
        device = self.sums.device
        if self.errors is not None and n:
            wrong = self.errors(outputs, targets)
        else:
            wrong = torch.zeros((), device=device)
        count = torch.full((), float(n), dtype=torch.float64, device=device)  # no host copy
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
                "lower optim.lr or set train.on_nonfinite=skip",
                first_bad,
            )
        state.skipped_steps += skipped
        self.skipped.zero_()
        loss, wrong, seen = sums.tolist()
        seconds = self.seconds + time.perf_counter() - self.t0
        state.sums = dataclasses.replace(state.sums, loss=loss, wrong=wrong, seen=seen, seconds=seconds)
        n = max(seen, 1)
        errors = {"top1_err": wrong / n} if self.errors is not None else {}
        return {"loss": loss / n, **errors, "img_s": seen / max(seconds, 1e-9)}
