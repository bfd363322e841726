"""Datasets the recipes train on. ``digits`` is embedded (it ships with scikit-learn): no download."""

from __future__ import annotations

import itertools
import pickle
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from flint.engine.sampler import EpochSampler

__all__ = [
    "digits", "seed001_data", "seed001_split", "digits_for", "seed001_for", "torchvision_for", "fake_images_for",
    "fake_regression_for", "fake_images", "fake_regression", "torchvision_dataset", "DatasetMissing", "DatasetCorrupt", "FirstBatches",
    "DOWNLOADABLE", "DeviceTensorLoader", "random_crop_flip", "DEVICE_AUGMENT", "DatasetInfo", "dataset_info", "DIGITS_MEAN_STD",
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


# digits()'s standardisation with its defaults (28x28, 20% held out, split seed 0): the training split's
# mean and std after scaling and upsampling, for exported models' metadata (a test recomputes them).
DIGITS_MEAN_STD = (0.3056022822856903, 0.3247058391571045)


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


def seed001_data(labels: torch.Tensor) -> TensorDataset:
    """Seed 001's regression data: for each label x, the input ``[0, log x, 5x]``."""
    labels = labels.to(torch.float32).reshape(-1, 1)
    inputs = torch.cat([torch.zeros_like(labels), torch.log(labels), labels * 5], dim=1)
    return TensorDataset(inputs, labels)


def seed001_split() -> tuple[TensorDataset, TensorDataset]:
    """Seed 001's 63 samples x = 1..63 for training; the 62 midpoints x = 1.5..62.5 for validation.

    Example:
        >>> train, val = seed001_split()
        >>> len(train), len(val), train[0][0].tolist(), val[0][1].tolist()
        (63, 62, [0.0, 0.0, 5.0], [1.5])
    """
    return seed001_data(torch.arange(1, 64)), seed001_data(torch.arange(1, 63) + 0.5)


# The built-in recipes' datasets as ``Recipe.datasets`` calls them, with the run's config last
# (through ``flint.recipes.app.registry.lazy``, so that naming them imports nothing).


def digits_for(cfg: Any) -> tuple[Dataset, Dataset]:
    return digits()


def seed001_for(cfg: Any) -> tuple[Dataset, Dataset]:
    return seed001_split()


def torchvision_for(name: str, cfg: Any) -> tuple[Dataset, Dataset]:
    return torchvision_dataset(name, cfg.data_dir, cfg.download, not cfg.data_on_device)


def fake_images_for(shape: tuple[int, int, int], cfg: Any) -> tuple[Dataset, Dataset]:
    return fake_images(shape)


def fake_regression_for(in_features: int, cfg: Any) -> tuple[Dataset, Dataset]:
    return fake_regression(in_features)

# Per-channel statistics of the training sets, for Normalize; the keys are the downloadable datasets.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_DIGITS = tuple("0123456789")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset takes in and gives out: the metadata of an exported model.

    Attributes:
        preprocessing: in words, how a raw sample becomes the model's input.
        mean: per-channel mean subtracted after scaling, or None if the input is not normalised.
        std: per-channel std divided by after subtracting ``mean``, or None.
        classes: the class names by output index, or None (a regression, or classes without names).
    """

    preprocessing: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None


_IMAGES = "{size} {kind} images as floats in [0, 1] (pixel / 255), channels first, then (x - mean) / std per channel"
_INFO = {
    "digits": DatasetInfo(
        "scikit-learn's 8x8 digit images (values 0-16) divided by 16, resized to 28x28 (bilinear, align_corners=False),"
        " then (x - mean) / std", (DIGITS_MEAN_STD[0],), (DIGITS_MEAN_STD[1],), _DIGITS,
    ),
    "mnist": DatasetInfo(_IMAGES.format(size="28x28", kind="greyscale"), *_STATS["mnist"], _DIGITS),
    "fashion-mnist": DatasetInfo(_IMAGES.format(size="28x28", kind="greyscale"), *_STATS["fashion-mnist"], FASHION_MNIST_CLASSES),
    "cifar10": DatasetInfo(_IMAGES.format(size="32x32", kind="RGB"), *_STATS["cifar10"], CIFAR10_CLASSES),
    "seed001": DatasetInfo("[0, log x, 5x] for the target x"),
}


def dataset_info(name: str, task: str = "classification") -> DatasetInfo:
    """The :class:`DatasetInfo` of a recipe's dataset ``name``; cheap (nothing is loaded).

    ``fake`` is random images in [0, 1] for classification recipes, random normal vectors for regression.

    Example:
        >>> dataset_info("cifar10").classes[:3], dataset_info("mnist").mean
        (('airplane', 'automobile', 'bird'), (0.1307,))
    """
    if name == "fake":
        if task == "regression":
            return DatasetInfo("random normal inputs and targets (no real data)")
        return DatasetInfo("random images in [0, 1] (torchvision FakeData), not normalised")
    if name not in _INFO:
        raise ValueError(f"Argument name should be one of {', '.join([*_INFO, 'fake'])}, got {name!r}")
    return _INFO[name]


class DatasetMissing(RuntimeError):
    """A dataset that is not in the data directory and was not to be downloaded."""


class DatasetCorrupt(RuntimeError):
    """A dataset file that is there but cannot be used: truncated, not in the dataset's format, or
    inconsistent (image and label counts differ, labels out of range). The message names the file."""


_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes; 3 dimensions (images) or 1 (labels)


def _idx_header(path: Path, title: str, ndim: int) -> tuple[list[int], int]:
    """The sizes in an MNIST idx file's header and the file's size; raises DatasetCorrupt if it does not fit."""
    size = path.stat().st_size
    header = 4 * (ndim + 1)
    with path.open("rb") as f:
        head = f.read(header)
    if len(head) < header:
        raise DatasetCorrupt(f"{title} file {path} is truncated: {size} bytes, shorter than its {header}-byte header")
    (magic,) = struct.unpack(">I", head[:4])
    if magic != _IDX_MAGIC[ndim]:
        raise DatasetCorrupt(
            f"{title} file {path} is not an idx file of {'images' if ndim == 3 else 'labels'}: "
            f"it starts with 0x{magic:08x}, not 0x{_IDX_MAGIC[ndim]:08x}"
        )
    dims = list(struct.unpack(f">{ndim}I", head[4:]))
    expected = header + int(torch.tensor(dims).prod())
    if size < expected:
        raise DatasetCorrupt(f"{title} file {path} is truncated: {size} of {expected} bytes")
    if size > expected:
        raise DatasetCorrupt(f"{title} file {path} is {size - expected} bytes longer than its header's {expected} bytes")
    return dims, size


def _check_mnist_files(raw: Path, title: str) -> None:
    """Every idx file pair in ``raw`` fits its header and its partner, before torchvision reads them.

    torchvision's reader asserts on bad headers and sizes, and nothing compares the image and label
    counts: a mismatch would only fail mid-training. Files that are not there are left to torchvision.
    """
    for prefix in ("train", "t10k"):
        images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        if not (images.is_file() and labels.is_file()):
            continue
        (n_images, rows, cols), _ = _idx_header(images, title, 3)
        (n_labels,), _ = _idx_header(labels, title, 1)
        if (rows, cols) != (28, 28):
            raise DatasetCorrupt(f"{title} file {images} holds {rows}x{cols} images, not 28x28")
        if n_images != n_labels:
            raise DatasetCorrupt(f"{title} files {images} and {labels} do not match: {n_images} images, {n_labels} labels")


def _check_targets(targets: Any, n: int, where: str, title: str) -> None:
    """As many labels as images, each a class index 0-9."""
    labels = torch.as_tensor(targets)
    if len(labels) != n:
        raise DatasetCorrupt(f"{title} files in {where} do not match: {n} images, {len(labels)} labels")
    if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) <= 9):
        bad = int(labels[(labels < 0) | (labels > 9)][0])
        raise DatasetCorrupt(f"{title} files in {where} hold label {bad}; the classes are 0-9")


def _diagnose_cifar(folder: Path, names: list[str], verify_md5: Any) -> None:
    """Raise DatasetCorrupt naming the first CIFAR-10 file of ``names`` that is bad; return if none is.

    Used only once torchvision's loading failed or its result does not add up, so that the message
    can name the file: ``verify_md5(path, md5)`` (torchvision's check against the release), then the
    pickle's content. ``names`` pairs come from torchvision's own lists.
    """
    from torchvision.datasets import CIFAR10

    md5s = dict(CIFAR10.train_list + CIFAR10.test_list)
    md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    for name in names:
        path = folder / name
        if not verify_md5(str(path), md5s[name]):
            raise DatasetCorrupt(
                f"CIFAR-10 file {path} is corrupt: its MD5 sum is not the CIFAR-10 release's; pass --download to fetch it again"
            )
        try:
            with path.open("rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as e:  # EOFError, UnpicklingError, ...: whatever a damaged pickle raises
            raise DatasetCorrupt(f"CIFAR-10 file {path} is truncated or not a python batch ({type(e).__name__}: {e})".splitlines()[0]) from None
        key = "label_names" if name == CIFAR10.meta["filename"] else "labels"
        if not isinstance(entry, dict) or key not in entry or (key == "labels" and "data" not in entry):
            raise DatasetCorrupt(f"CIFAR-10 file {path} is not a CIFAR-10 python batch: no {key!r} entry")
        if key == "label_names":
            continue
        data = entry["data"]
        shape = getattr(data, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != 3 * 32 * 32:
            raise DatasetCorrupt(f"CIFAR-10 file {path} holds data of shape {shape}, not (images, 3072)")
        _check_targets(entry["labels"], shape[0], str(path), "CIFAR-10")


def _load_checked(name: str, make: Any, data_dir: str) -> tuple[Dataset, Dataset]:
    """torchvision's (train, test) from ``make(train)``, each file checked first or, for CIFAR-10, on failure."""
    title = _TITLES[name]
    if name != "cifar10":
        _check_mnist_files(Path(data_dir, "MNIST" if name == "mnist" else "FashionMNIST", "raw"), title)
        train, test = make(True), make(False)
        for split, data in (("train", train), ("t10k", test)):
            _check_targets(data.targets, len(data.data), f"{Path(data_dir, type(data).__name__, 'raw')} ({split})", title)
        return train, test
    from torchvision.datasets import CIFAR10, cifar

    folder = Path(data_dir, CIFAR10.base_folder)
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    try:
        train, test = make(True), make(False)
    except RuntimeError as e:
        if "not found or corrupted" in str(e) and all((folder / n).is_file() for n in names):
            _diagnose_cifar(folder, names, cifar.check_integrity)  # present but failing: name the file
        raise
    except Exception:  # a damaged pickle, a batch of the wrong shape: find which file
        _diagnose_cifar(folder, names, cifar.check_integrity)
        raise
    for data in (train, test):
        if len(data.targets) != len(data.data) or (data.targets and not 0 <= min(data.targets) <= max(data.targets) <= 9):
            _diagnose_cifar(folder, names, cifar.check_integrity)
            _check_targets(data.targets, len(data.data), str(folder), "CIFAR-10")
    return train, test


def torchvision_dataset(name: str, data_dir: str, download: bool, augment: bool = True) -> tuple[Dataset, Dataset]:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision's own dataset classes, as (train, test).

    Images become normalised tensors; with ``augment``, CIFAR-10 training images are also randomly
    cropped (4 pixels of padding) and flipped (``DEVICE_AUGMENT`` does the same per batch on a device). The files are read from ``data_dir`` in the datasets' own formats (MNIST idx
    files, CIFAR-10 python batches) or fetched there first with ``download``.

    Every file is checked before training: a truncated file, one that is not in the dataset's
    format, image and label counts that differ or labels outside 0-9 raise :class:`DatasetCorrupt`
    with one line naming the file (torchvision's own errors would be an ``AssertionError`` or a
    failure in the middle of training). MNIST headers are checked before torchvision reads the
    files; CIFAR-10 batches (already checked against the release's MD5 sums by torchvision) are
    looked at one by one only if torchvision's loading fails or its result does not add up.

    Raises:
        DatasetMissing: the files are not there and ``download`` is False; the message names the
            directory and the flag.
        DatasetCorrupt: a file is there but damaged; the message names it and what is wrong.
    """
    from torchvision import datasets, transforms

    classes = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
    mean, std = _STATS[name]
    plain = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    extra = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment and name == "cifar10" else []

    def make(train: bool) -> Dataset:
        transform = transforms.Compose((extra if train else []) + plain)
        return classes[name](data_dir, train=train, transform=transform, download=download)

    try:
        return _load_checked(name, make, data_dir)
    except RuntimeError as e:
        if download or isinstance(e, DatasetCorrupt) or "not found" not in str(e):
            raise
        raise DatasetMissing(f"dataset {name} not found in {data_dir}; pass --download to fetch it there") from None


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
    runs per batch on the device. The order comes from ``sampler``, an :class:`flint.engine.EpochSampler`
    (``flint.handlers.DataOrder`` sets its epoch and, on a resume mid-epoch, the batches to skip), so a run
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

