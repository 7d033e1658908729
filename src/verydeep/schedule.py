"""The paper's learning-rate schedule: divide by 10 when held-out accuracy stops improving.

It was divided three times, then training stopped; here the number of divisions, the factor,
the patience and how many epochs each comparison averages (``window``; 1 is the paper's rule) are
explicit. The schedule stops training at the first plateau after the last
division.

Example:
    >>> from verydeep.schedule import PlateauSchedule
    >>> s = PlateauSchedule(lr=0.01, factor=0.1, patience=1, max_reductions=1)
    >>> [(s.step(acc), round(s.lr, 4), s.stopped) for acc in (0.5, 0.6, 0.6)]
    [(True, 0.01, False), (True, 0.01, False), (False, 0.001, False)]
    >>> [(s.step(acc), round(s.lr, 4), s.stopped) for acc in (0.7, 0.7)]
    [(True, 0.001, False), (False, 0.001, True)]
"""

from __future__ import annotations

import math

from .config import OptimConfig


class _Stateful:
    """Checkpointing for a schedule: its whole state is its attributes."""

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class PlateauSchedule(_Stateful):
    """``window`` > 1: the rule compares the mean of the last ``window`` epochs' metric with the
    best such mean, not single epochs (one epoch's accuracy on a small held-out split moves by
    more than an epoch of training gains, and a plateau read from that noise cuts the rate early).
    The checkpoint's "new best" stays the single epoch's."""

    def __init__(
        self,
        lr: float,
        factor: float = 0.1,
        patience: int = 1,
        max_reductions: int = 3,
        window: int = 1,
        ramp: tuple[float, int] = (1.0, 0),
    ) -> None:
        self.lr, self.factor, self.patience, self.max_reductions = lr, factor, patience, max_reductions
        self.window = window
        # (start fraction, steps): the rate rises linearly from lr * start to lr over the first
        # steps (Goyal et al.'s warm-up to a linearly scaled rate); (1.0, 0): none
        self.ramp_from, self.ramp_steps = ramp
        self.best = float("-inf")  # best mean over ``window`` epochs: what the rule compares with
        self.best_epoch_metric = float("-inf")  # best single epoch: what the best checkpoint holds
        self.recent: list[float] = []
        self.bad_epochs = 0
        self.reductions = 0
        self.stopped = False

    def load_state_dict(self, state: dict) -> None:
        # a schedule saved before ``window`` existed compared single epochs: its best is both
        older = {"best_epoch_metric": state["best"], "recent": [], "window": 1}
        super().load_state_dict(older | {"ramp_from": 1.0, "ramp_steps": 0} | state)

    def step(self, metric: float) -> bool:
        """Record one epoch's held-out metric (higher is better); True if it is a new best."""
        improved = metric > self.best_epoch_metric
        self.best_epoch_metric = max(metric, self.best_epoch_metric)
        self.recent = [*self.recent, metric][-self.window :]
        mean = sum(self.recent) / len(self.recent)
        if mean > self.best:
            self.best, self.bad_epochs = mean, 0
            return improved
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.bad_epochs = 0
            if self.reductions >= self.max_reductions:
                self.stopped = True
            else:
                self.lr *= self.factor
                self.reductions += 1
        return improved

    def at_step(self, step: int) -> float:
        """The rate for optimiser step ``step``: constant within an epoch, after the ramp."""
        if step < self.ramp_steps:
            return self.lr * (self.ramp_from + (1 - self.ramp_from) * (step + 1) / self.ramp_steps)
        return self.lr


class CosineSchedule(_Stateful):
    """Linear warm-up, then cosine decay to zero at the last step of ``epochs`` (not the paper's).

    For fixed budgets far shorter than the paper's 74 epochs: the plateau schedule spends them
    waiting for plateaus. ``step`` tracks the best held-out metric (for the best checkpoint) and
    never stops early; ``at_step`` sets ``lr`` for an optimiser step.

    Example:
        >>> s = CosineSchedule(lr=0.1, epochs=2, warmup_epochs=1, steps_per_epoch=2)
        >>> [round(s.at_step(i), 3) for i in range(4)]
        [0.05, 0.1, 0.05, 0.0]
    """

    def __init__(self, lr: float, epochs: int, warmup_epochs: float = 1.0, steps_per_epoch: int = 1) -> None:
        self.base_lr, self.epochs, self.warmup_epochs = lr, epochs, warmup_epochs
        self.steps_per_epoch = steps_per_epoch
        self.lr = self.at_step(0)
        self.best = float("-inf")
        self.stopped = False

    def at_step(self, step: int) -> float:
        total = max(1, self.epochs * self.steps_per_epoch)
        warm = self.warmup_epochs * self.steps_per_epoch
        if step < warm:
            self.lr = self.base_lr * (step + 1) / warm
        else:
            progress = (step + 1 - warm) / max(1, total - warm)
            self.lr = 0.5 * self.base_lr * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr

    def step(self, metric: float) -> bool:
        if metric > self.best:
            self.best = metric
            return True
        return False


def lr_scale(optim: OptimConfig) -> float:
    """``optim.lr_scaling=linear``: batch_size / lr_base_batch (Goyal et al.'s rule); else 1."""
    return optim.batch_size / optim.lr_base_batch if optim.lr_scaling == "linear" else 1.0


def make_schedule(optim: OptimConfig, epochs: int, steps_per_epoch: int) -> PlateauSchedule | CosineSchedule:
    """The schedule ``optim.schedule`` names, at ``optim.lr`` scaled by ``lr_scale``. With the
    plateau rule the scaled rate is reached by a linear ramp from ``optim.lr`` over
    ``scaling_warmup_epochs``; cosine's own warm-up (from 0) leads to it."""
    k = lr_scale(optim)
    if optim.schedule == "cosine":
        return CosineSchedule(optim.lr * k, epochs, optim.warmup_epochs, steps_per_epoch)
    ramp = (1 / k, round(optim.scaling_warmup_epochs * steps_per_epoch)) if k != 1 else (1.0, 0)
    return PlateauSchedule(
        optim.lr * k, optim.lr_factor, optim.patience, optim.max_reductions, optim.plateau_window, ramp
    )
