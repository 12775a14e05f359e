"""Batches in an order fixed by (seed, epoch): the same on every run, resumable mid-epoch, shardable.

`EpochBatches` draws each epoch's permutation from a generator seeded with the seed and the
epoch number, so a run restarted at (epoch, batch) sees exactly the batches an uninterrupted
run would have, and under DistributedDataParallel every rank takes its own share of the same
permutation (rank r takes every world-th sample), each rank getting the same number of batches.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, default_collate


class EpochBatches:
    """Shuffled (or ordered) mini-batches of a map-style dataset, deterministic per (seed, epoch)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False, limit: int | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.size = min(len(dataset), limit) if limit else len(dataset)  # a data fraction: the first `limit`

    def indices(self, epoch: int) -> list[int]:
        """This rank's sample indices for `epoch`, in order (every rank gets as many)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = len(order) // self.world_size
        return order[self.rank::self.world_size][:per_rank]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """The batches of `epoch`, from batch number `start` on."""
        order = self.indices(epoch)
        for b in range(start, len(self)):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield default_collate([self.dataset[i] for i in chunk])

    def __iter__(self) -> Iterator[Any]:
        return self.epoch(0)

    def __len__(self) -> int:
        n = self.size // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
