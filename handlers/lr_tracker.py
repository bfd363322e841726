"""Tracks the learning rate of every param group, as BMXNet's ``track_lr``."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events

from engine.trainer import iteration_in_epoch, samples_seen
from handlers.records import RecordStream

__all__ = ["LRTracker", "current_lrs"]


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each param group, in order."""
    return [float(group["lr"]) for group in optimizer.param_groups]


class LRTracker:
    """Emits the LR of every param group as each epoch starts and every ``every`` iterations.

    Records look like ``{"phase": "lr", "epoch", "iteration", "samples", "lr": [per group]}``; the
    TensorBoard sink plots them as ``training/lr/group_<i>``. By default the epoch's record is taken
    at the ITERATION_STARTED of its first iteration, after that event's other handlers: it records
    the LR that the epoch's first step uses, set by an LR scheduler (per epoch or per iteration)
    attached before or after it. A run resumed mid-epoch records from the next epoch's start.

    Args:
        optimizer: whose param groups to read.
        stream: where records go.
        every: iterations between records; 0 or None records at epoch starts only. Default 50.

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

    def attach(self, engine: Engine, *events: Any) -> LRTracker:
        """Register on ``events`` (default: each epoch's first iteration and every ``every`` iterations)."""
        for event in events:
            engine.add_event_handler(event, self)
        if not events:  # nothing called at the other steps (every=: checked in a Flint engine's loop)
            engine.add_event_handler(Events.EPOCH_STARTED, self._arm)
            if self.every:
                engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        return self

    def _arm(self, engine: Engine) -> None:
        # Registered now, the record comes after the ITERATION_STARTED handlers (schedulers) already there.
        if not iteration_in_epoch(engine) and not engine.has_event_handler(self._first_step, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self._first_step)

    def _first_step(self, engine: Engine) -> None:
        engine.remove_event_handler(self._first_step, Events.ITERATION_STARTED)  # once per epoch
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
