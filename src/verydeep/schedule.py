"""The paper's learning-rate schedule: divide by 10 when held-out accuracy stops improving.

It was divided three times, then training stopped; here the number of divisions, the factor and
the patience are explicit. The schedule stops training at the first plateau after the last
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


class PlateauSchedule:
    def __init__(self, lr: float, factor: float = 0.1, patience: int = 1, max_reductions: int = 3) -> None:
        self.lr, self.factor, self.patience, self.max_reductions = lr, factor, patience, max_reductions
        self.best = float("-inf")
        self.bad_epochs = 0
        self.reductions = 0
        self.stopped = False

    def step(self, metric: float) -> bool:
        """Record one epoch's held-out metric (higher is better); True if it is a new best."""
        if metric > self.best:
            self.best, self.bad_epochs = metric, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.bad_epochs = 0
            if self.reductions >= self.max_reductions:
                self.stopped = True
            else:
                self.lr *= self.factor
                self.reductions += 1
        return False

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)
