"""Datasets the recipes train on. ``digits`` is embedded (it ships with scikit-learn): no download."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from engine.sampler import EpochSampler

__all__ = [
    "digits", "fake_images", "fake_regression", "torchvision_dataset", "DatasetMissing", "FirstBatches", "DOWNLOADABLE",
    "DeviceTensorLoader", "random_crop_flip", "DEVICE_AUGMENT",
]  # fmt: skip


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


def fake_images(
    shape: tuple[int, int, int], num_classes: int = 10, train_size: int = 256, val_size: int = 64
) -> tuple[Dataset, Dataset]:
    """torchvision's ``FakeData`` shaped like a real dataset, for smoke runs: random images in [0, 1].

    Every image is fixed by its index, so runs repeat; validation images follow the training ones.
    """
    from torchvision.datasets import FakeData
    from torchvision.transforms import ToTensor

    def make(size: int, offset: int) -> Dataset:
        return FakeData(size, shape, num_classes, transform=ToTensor(), random_offset=offset)

    return make(train_size, 0), make(val_size, train_size)


def fake_regression(
    in_features: int, out_features: int = 1, train_size: int = 64, val_size: int = 32
) -> tuple[Dataset, Dataset]:
    """Random inputs and targets for a regression recipe's smoke runs, fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    n = train_size + val_size
    x, y = torch.randn(n, in_features, generator=g), torch.randn(n, out_features, generator=g)
    return TensorDataset(x[:train_size], y[:train_size]), TensorDataset(x[train_size:], y[train_size:])



# Per-channel statistics of the training sets, for Normalize; the keys are the downloadable datasets.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetMissing(RuntimeError):
    """A dataset that is not in the data directory and was not to be downloaded."""


def torchvision_dataset(name: str, data_dir: str, download: bool, augment: bool = True) -> tuple[Dataset, Dataset]:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision's own dataset classes, as (train, test).

    Images become normalised tensors; with ``augment``, CIFAR-10 training images are also randomly
    cropped (4 pixels of padding) and flipped (``DEVICE_AUGMENT`` does the same per batch on a device). The files are read from ``data_dir`` in the datasets' own formats (MNIST idx
    files, CIFAR-10 python batches) or fetched there first with ``download``.

    Raises:
        DatasetMissing: the files are not there and ``download`` is False; the message names the
            directory and the flag.
    """
    from torchvision import datasets, transforms

    classes = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
    mean, std = _STATS[name]
    plain = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    extra = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment and name == "cifar10" else []
    try:
        train = classes[name](data_dir, train=True, transform=transforms.Compose(extra + plain), download=download)
        test = classes[name](data_dir, train=False, transform=transforms.Compose(plain), download=download)
    except RuntimeError as e:
        if download or "not found" not in str(e):
            raise
        raise DatasetMissing(f"dataset {name} not found in {data_dir}; pass --download to fetch it there") from None
    return train, test


DOWNLOADABLE = tuple(_STATS)


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """A batch's random crops (zero padding ``padding``) and horizontal flips, one draw per image, on x's device.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> random_crop_flip(torch.ones(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cropped = padded.gather(2, rows)
    cols = (left + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), cropped.flip(3), cropped)


DEVICE_AUGMENT = {"cifar10": random_crop_flip}


class DeviceTensorLoader:
    """A whole (small) dataset held as two tensors on a device, served in batches without a DataLoader.

    The dataset's transforms run once, when it is loaded; ``augment`` (e.g. :func:`random_crop_flip`)
    runs per batch on the device. The order comes from ``sampler``, an :class:`engine.EpochSampler`
    (``handlers.DataOrder`` sets its epoch and, on a resume mid-epoch, the batches to skip), so a run
    repeats with its seed and resumes exactly like one with a DataLoader.

    Example:
        >>> data = TensorDataset(torch.arange(5.0).unsqueeze(1), torch.arange(5))
        >>> loader = DeviceTensorLoader(data, batch_size=2, shuffle=False)
        >>> loader.sampler.skip(2)
        >>> [y.tolist() for _, y in loader]
        [[2, 3], [4]]
        >>> len(loader), [y.tolist() for _, y in loader]
        (3, [[0, 1], [2, 3], [4]])
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        device: str | torch.device = "cpu",
        augment: Any = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if isinstance(dataset, TensorDataset):
            x, y = dataset.tensors
        else:
            from torch.utils.data import DataLoader

            batches = list(DataLoader(dataset, batch_size=1024))
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.augment = batch_size, augment
        # Training shards are padded to equal sizes; validation ones (shuffle=False) count each sample once.
        self.sampler = EpochSampler(len(self.y), seed=seed, shuffle=shuffle, num_replicas=num_replicas, rank=rank, pad=shuffle)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.indices().to(self.x.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx]
            yield (self.augment(x) if self.augment is not None else x), self.y[idx]

