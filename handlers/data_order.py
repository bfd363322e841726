"""Data order across epochs and resumes: tells an epoch-seeded sampler which epoch, and where in it, the run is."""

from __future__ import annotations

from typing import Protocol

from ignite.engine import Engine, Events

from flint.engine.engine import iteration_in_epoch

__all__ = ["DataOrder"]


class _EpochSeeded(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class DataOrder:
    """At every EPOCH_STARTED, sets the sampler's epoch; on a resume mid-epoch, skips the batches done.

    Ignite's Engine neither calls ``set_epoch`` (needed by ``DistributedSampler`` and
    :class:`flint.engine.EpochSampler`) nor skips, on a resume mid-epoch, the batches already trained on:
    it would start the epoch's data over. With this handler the resumed epoch continues with the
    same batches, in the same order, as the run that was stopped. Skipping needs a sampler with
    ``skip(n)`` (``EpochSampler``); ``batch_size`` converts batches to samples.

    Args:
        sampler: the training data's sampler, with ``set_epoch(epoch)`` and optionally ``skip(n)``.
        batch_size: samples per batch, to skip whole batches. Default 1.

    Example:
        >>> from ignite.engine import Engine
        >>> from torch.utils.data import DataLoader
        >>> from flint.engine import EpochSampler
        >>> sampler = EpochSampler(4, seed=0)
        >>> loader = DataLoader(list(range(4)), batch_size=2, sampler=sampler)
        >>> seen = []
        >>> trainer = Engine(lambda e, b: seen.append(b.tolist()))
        >>> _ = DataOrder(sampler, batch_size=2).attach(trainer)
        >>> _ = trainer.run(loader, max_epochs=2)
        >>> resumed = Engine(lambda e, b: seen.append(b.tolist()))
        >>> _ = DataOrder(sampler, batch_size=2).attach(resumed)
        >>> resumed.load_state_dict({"iteration": 3, "epoch_length": 2, "max_epochs": 2})
        >>> _ = resumed.run(loader)
        >>> seen[-1] == seen[3]
        True
    """

    def __init__(self, sampler: _EpochSeeded, batch_size: int = 1) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Argument batch_size should be a positive integer, got {batch_size!r}")
        self.sampler, self.batch_size = sampler, batch_size

    def attach(self, engine: Engine) -> DataOrder:
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        return self

    def _on_epoch_started(self, engine: Engine) -> None:
        self.sampler.set_epoch(engine.state.epoch)
        done = iteration_in_epoch(engine)
        if done:
            skip = getattr(self.sampler, "skip", None)
            if skip is None:
                raise RuntimeError(f"resuming mid-epoch needs a sampler with skip(n); {type(self.sampler).__name__} has none")
            skip(done * self.batch_size)
