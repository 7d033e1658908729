"""Batches for one rank: a seeded per-epoch order, sharded over ranks, resumable mid-epoch.

Every rank sees ``perm[rank::world]`` of the same seeded permutation, cut to whole batches so
all ranks take the same number of steps (DDP needs that). ``start`` skips the micro-batches an
interrupted run already used, so a resumed epoch continues with exactly the next samples.

Example:
    >>> import torch
    >>> from verydeep.data.loaders import EpochOrder, TensorBatches
    >>> order = EpochOrder(10, micro_batch=2, seed=0)
    >>> b = TensorBatches(torch.zeros(10, 1, 4, 4), torch.arange(10), order)
    >>> b.set_epoch(0, start=3)
    >>> len(list(b)), len(b)  # the rest of the epoch; the whole epoch
    (2, 5)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .folder import collate_skip_bad
from .images import BadImageError


def spread_indices(length: int, n: int) -> list[int]:
    """``n`` indices evenly spread over ``range(length)``, first and last included (all of them
    if ``n >= length``). Over a class-sorted list every class keeps its share; training subsets,
    ``eval --limit``, calibration sets and figures all pick this way."""
    if n >= length:
        return list(range(length))
    if n <= 0:
        return []
    return torch.linspace(0, length - 1, n).round().long().unique().tolist()


class EpochOrder(Sampler[int]):
    """Indices for this rank in this epoch (shuffled with seed+epoch), whole batches only."""

    def __init__(
        self, n: int, micro_batch: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True
    ) -> None:
        self.n, self.micro, self.seed, self.rank, self.world, self.shuffle = (
            n,
            micro_batch,
            seed,
            rank,
            world,
            shuffle,
        )
        self.epoch, self.start = 0, 0
        self.drop_last = shuffle  # training: equal steps on every rank; evaluation: every sample

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        mine = perm[self.rank :: self.world]
        if self.drop_last:
            per_rank = self.n // self.world
            mine = mine[: per_rank - per_rank % self.micro]
        return mine[self.start * self.micro :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.indices())

    def num_batches(self) -> int:
        """Micro-batches in the whole epoch, wherever it was resumed."""
        start, self.start = self.start, 0
        n = len(self)
        self.start = start
        return -(-n // self.micro)


class TensorBatches:
    """Micro-batches of an in-memory uint8 dataset in ``order``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, order: EpochOrder) -> None:
        self.images, self.labels, self.order = images, labels, order

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.order.set_epoch(epoch, start)

    def __len__(self) -> int:
        return self.order.num_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order.indices()
        for i in range(0, len(idx), self.order.micro):
            j = idx[i : i + self.order.micro]
            yield self.images[j], self.labels[j]


GPU_WORKERS_MAX = 32  # past this, more processes add start-up and memory, not images/s


def cores_per_rank() -> int:
    """The cores this process may use (its affinity mask, which a scheduler such as Slurm sets),
    shared evenly by the ranks torchrun started on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def decoding_workers(workers: int, device: torch.device, cpu_auto: int) -> int:
    """DataLoader processes: ``workers`` >= 0 as given; -1 (auto) from the cores present. On a
    GPU, every core of this rank's share but one (the one that drives the GPU; decoding is
    what feeds it), at most ``GPU_WORKERS_MAX``. On the CPU the net itself uses the cores, so
    ``cpu_auto`` (each caller's measured choice) capped at the share."""
    if workers >= 0:
        return workers
    share = cores_per_rank()
    if device.type == "cuda":
        return max(1, min(GPU_WORKERS_MAX, share - 1))
    return min(cpu_auto, share)


class FolderBatches:
    """Micro-batches decoded by DataLoader workers; bad images are dropped and counted.

    A micro-batch in which every image was bad is still yielded (empty) so that every rank and
    the gradient accumulation see the same number of micro-batches.
    """

    def __init__(self, dataset: Dataset, order: EpochOrder, workers: int, pin_memory: bool) -> None:
        self.order, self.bad_images = order, 0
        crop = getattr(getattr(dataset, "transform", None), "crop", 1)
        self.loader = DataLoader(
            dataset,
            batch_size=order.micro,
            sampler=order,
            num_workers=workers,
            collate_fn=functools.partial(collate_skip_bad, shape=(3, crop, crop)),
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.order.set_epoch(epoch, start)

    def __len__(self) -> int:
        return self.order.num_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for images, labels, _, bad in self.loader:
                self.bad_images += bad
                yield images, labels
        except BadImageError as e:  # on_bad_image=fail: one line naming the file, not a worker traceback
            raise BadImageError(_last_line(str(e))) from None


def _last_line(message: str) -> str:
    """The error itself from a DataLoader worker's re-raised message (traceback text first)."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else message
    return last.split("BadImageError: ", 1)[-1]
