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
    at the ITERATION_STARTED of its first iteration: attached after an LR scheduler (per epoch or
    per iteration), it records the LR that the epoch's first step uses. An epoch resumed mid-way (as
    :func:`engine.iteration_in_epoch` tells) has no such record, so a resumed run logs what an
    unbroken one does.

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
        self._epoch_record_due = False

    def attach(self, engine: Engine, *events: Any) -> LRTracker:
        """Register on ``events`` (default: each epoch's first iteration and every ``every`` iterations)."""
        for event in events:
            engine.add_event_handler(event, self)
        if not events:  # every=: on a Flint engine, nothing is called between the due iterations
            engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
            engine.add_event_handler(Events.ITERATION_STARTED, self._on_iteration_started)
            if self.every:
                engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        return self

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_record_due = not iteration_in_epoch(engine)  # also right while the length is unknown

    def _on_iteration_started(self, engine: Engine) -> None:
        if self._epoch_record_due:
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
