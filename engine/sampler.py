"""A sampler whose order is a pure function of (seed, epoch), so a run can resume mid-epoch exactly."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """Sample indices in an order fixed by ``seed`` and the epoch, optionally skipping a prefix once.

    PyTorch's ``RandomSampler`` draws its permutation from the global generator when an iterator is
    created, so the order depends on everything that ran before; after a resume mid-epoch it cannot
    be reproduced. This sampler draws epoch ``e``'s permutation from its own generator seeded with
    ``seed + e`` (as ``DistributedSampler`` does), and :meth:`skip` drops the first ``n`` indices of
    the next pass only: the batches a resumed run has already trained on. ``generator`` is reseeded
    per epoch as well; give it to the ``DataLoader`` (``generator=sampler.generator``) so that its
    worker seeds do not draw from the global generator either.

    For data-parallel training it also shards, as ``DistributedSampler`` does: every rank draws the
    same permutation, pads it (with ``pad``) to a multiple of ``num_replicas`` by repeating its
    start, and takes every ``num_replicas``-th index from ``rank`` on. Each rank then has the same
    number of samples, so batch ``k`` of all ranks together is batch ``k`` of one process with a
    ``num_replicas`` times larger batch. Without ``pad`` (validation) no sample is counted twice and
    shards differ by at most one.

    Args:
        size: number of samples.
        seed: the run's seed. Default 0.
        shuffle: a new permutation every epoch; False keeps ``0..size-1``. Default True.
        num_replicas: data-parallel ranks sharing the data. Default 1.
        rank: this process's rank. Default 0.
        pad: repeat samples so every rank gets as many. Default True.

    Example:
        >>> sampler = EpochSampler(6, seed=1)
        >>> sampler.set_epoch(3)
        >>> order = list(sampler)
        >>> sampler.skip(4)
        >>> list(sampler) == order[4:], list(sampler) == order
        (True, True)
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0, pad: bool = True
    ) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"Argument size should be a non-negative integer, got {size!r}")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"Argument num_replicas should be a positive integer, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"Argument rank should be in [0, {num_replicas - 1}], got {rank!r}")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch = 0
        self.generator = torch.Generator()
        self._skip = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next pass on."""
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)

    def skip(self, n: int) -> None:
        """Leave out the first ``n`` indices of the next pass (the next pass only)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"Argument n should be a non-negative integer, got {n!r}")
        self._skip = n

    def indices(self) -> torch.Tensor:
        """This pass's indices as a tensor (consumes a pending :meth:`skip`)."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        if self.num_replicas > 1:
            if self.pad and self.size % self.num_replicas:
                extra = self.num_replicas - self.size % self.num_replicas
                order = torch.cat([order, order.repeat(-(-extra // max(1, self.size)))[:extra]])
            order = order[self.rank :: self.num_replicas]
        start, self._skip = self._skip, 0
        return order[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return self.size
        if self.pad:
            return -(-self.size // self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))
