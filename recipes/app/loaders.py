"""Where a run's batches come from: the training and validation loaders of a recipe's datasets on this rank."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from flint.engine import EpochSampler
from flint.recipes.app.config import Config
from flint.recipes.app.stopping import dataloader_worker_init
from flint.recipes.builtin.data import DEVICE_AUGMENT, DeviceTensorLoader, FirstBatches

__all__ = ["make_loaders", "make_val_loader", "first_input"]


def make_loaders(cfg: Config, train_set: Any, val_set: Any, device: torch.device, world: int = 1, rank: int = 0) -> tuple[Any, Any, Any]:
    """``(train loader, validation loader or None, train sampler or None)`` of ``cfg`` on this rank.

    Batches of a map-style dataset come from an :class:`flint.engine.EpochSampler` (each rank its shard),
    whose order is a function of (seed, epoch), so a run resumed mid-epoch sees the same batches; with
    ``--data-on-device`` from tensors on the device. A DataLoader is used as given (its sampler is the
    one returned if it is an ``EpochSampler``), an iterable dataset batched in its own order.
    Validation batches: :func:`make_val_loader`."""
    batch_size = cfg.batch_size // world  # --batch-size is global
    train_loader: Any
    if isinstance(train_set, (DataLoader, IterableDataset)):
        train_loader = _as_loader(train_set, batch_size, cfg, device)
        sampler = getattr(train_set, "sampler", None)  # an EpochSampler's epoch is set and a resume skips what was done
        sampler = sampler if isinstance(sampler, EpochSampler) else None
    elif cfg.data_on_device:
        augment = DEVICE_AUGMENT.get(cfg.dataset)
        train_loader = DeviceTensorLoader(train_set, batch_size, shuffle=True, device=device, augment=augment, seed=cfg.seed,
                                          num_replicas=world, rank=rank)  # fmt: skip
        sampler = train_loader.sampler
    else:
        sampler = EpochSampler(len(train_set), seed=cfg.seed, num_replicas=world, rank=rank)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, generator=sampler.generator, **_loading(cfg, device))
    if cfg.test_run:
        train_loader = FirstBatches(train_loader, 1)
    return train_loader, make_val_loader(cfg, val_set, device, world, rank), sampler


def make_val_loader(cfg: Config, val_set: Any, device: torch.device, world: int = 1, rank: int = 0) -> Any:
    """The validation loader of ``cfg`` on this rank, or None without a set: batches of ``max(batch, 256)``, in order, unpadded."""
    if val_set is None:
        return None
    val_batch = max(cfg.batch_size // world, 256)
    loader: Any
    if isinstance(val_set, (DataLoader, IterableDataset)):
        loader = _as_loader(val_set, val_batch, cfg, device)
    elif cfg.data_on_device:
        loader = DeviceTensorLoader(val_set, val_batch, shuffle=False, device=device, num_replicas=world, rank=rank)
    else:
        val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False, num_replicas=world, rank=rank)
        loader = DataLoader(val_set, batch_size=val_batch, sampler=val_sampler, **_loading(cfg, device))
    return FirstBatches(loader, 1) if cfg.test_run else loader


def _as_loader(data: Any, batch_size: int, cfg: Config, device: torch.device) -> Any:
    """A DataLoader as given; an iterable dataset in batches of ``batch_size``, in its own order."""
    return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, **_loading(cfg, device))


def _loading(cfg: Config, device: torch.device) -> dict[str, Any]:
    """The DataLoader options both loaders share: worker processes, pinned memory on CUDA."""
    return {
        "num_workers": cfg.num_workers, "pin_memory": device.type == "cuda", "persistent_workers": cfg.num_workers > 0,
        "worker_init_fn": dataloader_worker_init if cfg.num_workers else None,
    }  # fmt: skip


def first_input(dataset: Any, device: torch.device) -> torch.Tensor | None:
    """One training input as a batch of one, for counting FLOPs; None if the data is not a tensor pair."""
    try:
        x = dataset[0][0]
    except Exception:
        return None
    return x.unsqueeze(0).to(device) if isinstance(x, torch.Tensor) else None
