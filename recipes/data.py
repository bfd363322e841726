"""Datasets the recipes train on. ``digits`` is embedded (it ships with scikit-learn): no download."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ["digits", "FirstBatches"]


class FirstBatches:
    """The first ``n`` batches of a fresh pass over ``loader``, each time it is iterated (``--test-run``).

    Running Ignite with ``epoch_length`` below the loader's length would instead continue one pass
    across epochs, which a resumed run cannot reproduce; a fresh pass per epoch reshuffles the same
    way in both.

    Example:
        >>> batches = FirstBatches([[1, 2], [3, 4], [5, 6]], 2)
        >>> len(batches), list(batches), list(batches)
        (2, [[1, 2], [3, 4]], [[1, 2], [3, 4]])
    """

    def __init__(self, loader: Iterable[Any], n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return self.n


def digits(size: int = 28, val_fraction: float = 0.2, split_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's handwritten digits: 1,797 8x8 images of 0-9, as (train, validation) tensors.

    Images are scaled to [0, 1], upsampled to ``size`` x ``size`` (bilinear, LeNet's 28x28 input)
    and standardised with the training split's mean and std. The split is a fixed permutation from
    ``split_seed``, independent of the run's seed, so every run validates on the same 20%.

    Args:
        size: output side in pixels. Default 28.
        val_fraction: share held out for validation. Default 0.2 (359 of the 1,797 images).
        split_seed: seed of the split permutation. Default 0.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(raw.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_val = round(len(y) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx])
