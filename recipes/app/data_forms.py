"""The forms a run's data may take, and how their batches reach the model.

Training and validation data (``fit()``'s ``train_data`` and ``val_data``, a recipe's datasets) may be:

- a map-style ``Dataset`` of ``(input, target)`` pairs: Flint batches it in an order fixed by
  (seed, epoch), so a run resumed mid-epoch sees the same batches;
- a ``Dataset`` of mappings: the target under ``target_key``, the other entries passed to the model
  as keyword arguments (``model(**features)``);
- an ``IterableDataset`` of either, with a length: batched in its own order;
- a ``DataLoader``: used as given (its batch size, sampler, workers and collate);
- a pair of arrays or tensors ``(X, y)``: a ``TensorDataset`` (NumPy floats in torch's default dtype).

A ``prepare_batch(batch, device, non_blocking) -> (x, y)`` callable takes any batch instead; the model is
then called as ``model(x)``. Batches move with Ignite's ``convert_tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ignite.utils import convert_tensor
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from flint.engine import prepare_batch
from flint.recipes.app.config import UsageError, option_name

__all__ = ["FORMS", "Batches", "checked_data", "as_data", "sample_kind", "size_of", "fingerprinted", "check_forms", "KeywordBatch",
           "KeywordInputs", "batch_plan"]  # fmt: skip

FORMS = "a Dataset of (input, target) pairs or of mappings (map-style, or iterable with a length), a DataLoader, or arrays (X, y)"
PrepareBatch = Callable[[Any, Any, bool], tuple[Any, Any]]


def _arrays(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(a, (np.ndarray, torch.Tensor)) for a in data)


def _tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    tensor = torch.as_tensor(array)
    return tensor.to(torch.get_default_dtype()) if tensor.is_floating_point() else tensor


def as_data(data: Any, what: str) -> Any:
    """``data`` as a run takes it: arrays ``(X, y)`` as a ``TensorDataset``, the other forms as given.

    Raises:
        UsageError: not one of :data:`FORMS`, arrays of different lengths, or an iterable dataset without a length.
    """
    if _arrays(data):
        x, y = data
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise UsageError(f"{what}=(X, y): X and y must hold one row per sample, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
        try:
            return TensorDataset(_tensor(x), _tensor(y))
        except TypeError as e:
            raise UsageError(f"{what}=(X, y): {e}") from None
    iterable = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(iterable, IterableDataset) and not hasattr(iterable, "__len__"):
        raise UsageError(f"{what}: an IterableDataset needs __len__ (its samples per epoch): Flint counts batches per epoch")
    indexed = hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (str, bytes, Mapping))
    if isinstance(data, (DataLoader, Dataset)) or indexed:
        return data
    raise UsageError(f"{what}: a {type(data).__name__} is not data Flint takes; give {FORMS}")


def sample_kind(data: Any, what: str, target_key: str) -> str:
    """``"pairs"`` or ``"mappings"`` for a map-style dataset (read from its first sample), else ``"unknown"``.

    Raises:
        UsageError: the first sample is neither a pair nor a mapping holding ``target_key``, or the dataset is empty.
    """
    if isinstance(data, (DataLoader, IterableDataset)):
        return "unknown"
    if len(data) == 0:
        raise UsageError(f"{what} is empty")
    sample = data[0]
    if isinstance(sample, Mapping):
        if target_key not in sample:
            keys = ", ".join(map(str, sample)) or "none"
            raise UsageError(f"{what}[0] has no key {target_key!r} (its keys: {keys}); name the target's key with target_key=")
        return "mappings"
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return "pairs"
    raise UsageError(f"{what}[0] is a {type(sample).__name__}: samples must be (input, target) pairs or mappings with a "
                     f"{target_key!r} key; or pass prepare_batch=")  # fmt: skip


def size_of(data: Any) -> int:
    """Samples in ``data`` (a DataLoader: its dataset's)."""
    return len(data.dataset if isinstance(data, DataLoader) else data)


def check_forms(sets: Sequence[Any], nproc_per_node: int, data_on_device: bool, style: str = "cli") -> None:
    """Options that need Flint to batch the data itself: several workers (Flint shards it), data held on the device."""
    sets = [d for d in sets if d is not None]
    batched = [d for d in sets if isinstance(d, (DataLoader, IterableDataset))]
    if batched and nproc_per_node > 1:
        name = option_name("nproc_per_node", style)
        raise UsageError(f"{name} {nproc_per_node} needs map-style datasets, which Flint shards among the workers: "
                         f"a {type(batched[0]).__name__} would feed every worker the same batches")  # fmt: skip
    if data_on_device and batched:
        name = option_name("data_on_device", style)
        raise UsageError(f"{name} takes datasets of (input, target) pairs, not a {type(batched[0]).__name__}")


class KeywordBatch:
    """``prepare_batch`` for mappings: ``(features, target)``, the target under ``target_key``, moved with ``convert_tensor``.

    A batch that is an ``(input, target)`` pair is moved as it is.

    Example:
        >>> x, y = KeywordBatch("label")({"pixels": torch.ones(2, 3), "label": torch.tensor([0, 1])})
        >>> sorted(x), y.tolist()
        (['pixels'], [0, 1])
    """

    def __init__(self, target_key: str = "target") -> None:
        self.target_key = target_key

    def __call__(self, batch: Any, device: Any = None, non_blocking: bool = False) -> tuple[Any, Any]:
        if isinstance(batch, Mapping):
            if self.target_key not in batch:
                raise ValueError(f"a batch has no key {self.target_key!r} (its keys: {', '.join(map(str, batch))}); "
                                 "name the target's key with target_key=")  # fmt: skip
            features = {key: value for key, value in batch.items() if key != self.target_key}
            return convert_tensor(features, device, non_blocking), convert_tensor(batch[self.target_key], device, non_blocking)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"a batch is a {type(batch).__name__}, neither an (input, target) pair nor a mapping; pass prepare_batch=")
        return prepare_batch(batch, device, non_blocking)


class KeywordInputs(nn.Module):
    """``module(**x)`` for a mapping ``x`` (Hugging Face's convention), ``module(x)`` otherwise. Checkpoints keep ``module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Any) -> Any:
        return self.module(**x) if isinstance(x, Mapping) else self.module(x)


def batch_plan(kinds: Sequence[str], target_key: str, prepare_batch: PrepareBatch | None,
               channels_last: bool) -> tuple[PrepareBatch | None, bool]:  # fmt: skip
    """``(prepare_batch for the engines, whether the model takes keyword inputs)`` for data whose samples are ``kinds``.

    Your ``prepare_batch`` if given (the model gets its ``x``); none (the engines' own, for pairs of
    tensors) when every set holds pairs; else :class:`KeywordBatch` and :class:`KeywordInputs`."""
    from flint.recipes.app.perf import ChannelsLast

    if prepare_batch is None and all(kind == "pairs" for kind in kinds):
        return (ChannelsLast() if channels_last else None), False
    prepare = prepare_batch or KeywordBatch(target_key)
    return (ChannelsLast(prepare) if channels_last else prepare), prepare_batch is None


@dataclass(frozen=True)
class Batches:
    """How a run's batches reach the model: the engines' ``prepare_batch`` (None: their own) and whether the model
    takes a batch's features as keyword arguments (wrap it in :class:`KeywordInputs`)."""

    prepare_batch: PrepareBatch | None = None
    keyword_inputs: bool = False


def checked_data(named: Sequence[tuple[str, Any]], cfg: Any, recipe: Any) -> tuple[list[Any], Batches]:
    """Each ``(name, data)``'s data as a run takes it (:func:`as_data`; None stays None), checked against ``cfg``'s
    options, and how its batches reach the model; ``recipe`` gives ``target_key`` and ``prepare_batch``.

    Raises:
        UsageError: a form Flint does not take, a first sample that is neither a pair nor a mapping with the
            target's key (without ``prepare_batch``), or options that need datasets (see :func:`check_forms`).
    """
    style = cfg.style
    sets = [as_data(data, name) if data is not None else None for name, data in named]
    check_forms(sets, cfg.nproc_per_node, cfg.data_on_device, style)
    kinds = []
    if recipe.prepare_batch is None:
        kinds = [sample_kind(data, name, recipe.target_key) for (name, _), data in zip(named, sets) if data is not None]
    if cfg.data_on_device and (recipe.prepare_batch is not None or "mappings" in kinds):
        name = option_name("data_on_device", style)
        raise UsageError(f"{name} takes datasets of (input, target) pairs, not mappings or batches for prepare_batch")
    prepare, keyword = batch_plan(kinds, recipe.target_key, recipe.prepare_batch, cfg.channels_last)
    return sets, Batches(prepare, keyword)


def fingerprinted(data: Any) -> Any:
    """What :func:`flint.recipes.app.fingerprint.data_fingerprint` reads of ``data``: a DataLoader's dataset; None for
    an iterable one (its samples are not read)."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    return None if isinstance(dataset, IterableDataset) else dataset
