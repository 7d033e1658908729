"""Batches of equal-shaped inputs from a stream of mixed shapes: dense evaluation, multi-crop
over photographs of many sizes, and feature extraction all group their inputs this way.

A bucket runs when its weight (crops, or crop-equivalents of pixels) reaches ``limit``. Shapes
that rarely recur would wait forever, so past ``keep`` x ``limit`` pending weight the oldest
bucket runs as it is: memory stays bounded and results are unchanged (nothing is padded).

Example:
    >>> from verydeep.evaluation.buckets import ShapeBuckets
    >>> ran = []
    >>> b = ShapeBuckets(lambda key, items: ran.append((key, items)), limit=2)
    >>> for key, item in [("a", 1), ("b", 2), ("a", 3)]:
    ...     b.add(key, item)
    >>> b.close()
    >>> ran
    [('a', [1, 3]), ('b', [2])]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class ShapeBuckets:
    """Items grouped by ``key``; ``run(key, items)`` is called once per full (or closed) bucket,
    items in the order they were added."""

    def __init__(self, run: Callable[[Hashable, list], None], limit: float, keep: float = 8) -> None:
        self.run, self.limit, self.keep = run, limit, keep
        self.pending: dict[Hashable, list] = {}
        self.weight: dict[Hashable, float] = {}
        self.batches = 0

    def add(self, key: Hashable, item: object, weight: float = 1.0) -> None:
        self.pending.setdefault(key, []).append(item)
        self.weight[key] = self.weight.get(key, 0.0) + weight
        if self.weight[key] >= self.limit:
            self.flush(key)
        while self.pending and sum(self.weight.values()) > self.keep * self.limit:
            self.flush(next(iter(self.pending)))  # the oldest bucket

    def flush(self, key: Hashable) -> None:
        items = self.pending.pop(key)
        self.weight.pop(key)
        self.batches += 1
        self.run(key, items)

    def close(self) -> None:
        """Run every bucket still pending."""
        for key in list(self.pending):
            self.flush(key)
