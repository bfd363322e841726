"""Tracks the learning rate of every param group, as BMXNet's ``track_lr``."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine

from flint.engine.engine import FlintEvents, TrainEvents, when
from flint.engine.progress import TrainProgress, progress
from flint.engine.trainer import samples_seen
from flint.handlers.records import RecordStream

__all__ = ["LRTracker", "current_lrs"]


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each param group, in order."""
    return [float(group["lr"]) for group in optimizer.param_groups]


class LRTracker:
    """Emits the LR of every param group at each epoch's first optimizer step and every ``every`` steps.

    Records look like ``{"phase": "lr", "epoch", "iteration", "samples", "lr": [per group]}``; the
    TensorBoard sink plots them as ``training/lr/group_<i>``. On a trainer from
    ``flint.engine.create_trainer`` they are taken at ``TrainEvents.BEFORE_OPTIMIZER_STEP``, so each shows
    the LR that step uses, whatever LR scheduler runs before (per epoch or per iteration) and in
    whatever order it was attached; ``every`` counts optimizer steps. On another engine they are
    taken at ITERATION_COMPLETED and ``every`` counts iterations. The epoch's record is armed at
    ``FlintEvents.NEW_EPOCH``: an epoch resumed mid-way has none, so a resumed run logs what an
    unbroken one does.

    Args:
        optimizer: whose param groups to read.
        stream: where records go.
        every: steps between records; 0 or None records at epoch starts only. Default 50.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        >>> seen = []
        >>> engine = Engine(lambda e, b: None)
        >>> _ = LRTracker(opt, RecordStream([seen.append]), every=2).attach(engine)
        >>> _ = engine.run(range(4), max_epochs=1)
        >>> [(r["iteration"], r["lr"]) for r in seen]
        [(1, [0.5]), (2, [0.5]), (4, [0.5])]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, stream: RecordStream, every: int | None = 50) -> None:
        if every is not None and (not isinstance(every, int) or every < 0):
            raise ValueError(f"Argument every should be a non-negative integer or None, got {every!r}")
        self.optimizer = optimizer
        self.stream = stream
        self.every = every
        self._epoch_record_due = False
        self._counts: TrainProgress | None = None  # a Flint trainer's: `every` counts its optimizer steps

    def attach(self, engine: Engine, *events: Any) -> LRTracker:
        """Register on ``events`` (default: each epoch's first step and every ``every`` steps)."""
        for event in events:
            engine.add_event_handler(event, self)
        if not events:
            self._counts = progress(engine)
            engine.add_event_handler(when(engine, FlintEvents.NEW_EPOCH), self._arm)
            # A plain handler with its own modulo: cheaper than an every= filter, which runs whether due or not.
            engine.add_event_handler(when(engine, TrainEvents.BEFORE_OPTIMIZER_STEP), self._on_step)
        return self

    def _arm(self, engine: Engine) -> None:
        self._epoch_record_due = True

    def _on_step(self, engine: Engine) -> None:
        count = self._counts.optimizer_step if self._counts is not None else engine.state.iteration
        if self._epoch_record_due or (self.every and not count % self.every):
            self._epoch_record_due = False
            self(engine)

    def __call__(self, engine: Engine) -> None:
        self.stream.emit(
            {
                "phase": "lr",
                "epoch": engine.state.epoch,
                "iteration": engine.state.iteration,
                "samples": samples_seen(engine),
                "lr": current_lrs(self.optimizer),
            }
        )
