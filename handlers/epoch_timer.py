"""Epoch timing, as BMXNet's: each epoch's time and the average without the first (warm-up) epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ignite.engine import Engine, Events

from engine.trainer import iteration_in_epoch
from handlers.meters import average_excluding_first

__all__ = ["EpochTimer"]


class EpochTimer:
    """Times each epoch from EPOCH_STARTED to its EPOCH_COMPLETED handlers.

    Attach it first so that its EPOCH_COMPLETED handler runs before validation: the epoch time is
    then the training time alone. Ignite's ``Timer`` averages every epoch and is not injectable;
    this keeps the list and averages without the first epoch of the process, whose time includes
    warm-up (after a resume too).

    Args:
        clock: seconds as a float. Default ``time.perf_counter``.

    Example:
        >>> from ignite.engine import Engine
        >>> ticks = iter([0.0, 5.0, 5.0, 7.0, 7.0, 10.0])
        >>> engine = Engine(lambda e, b: None)
        >>> timer = EpochTimer(clock=lambda: next(ticks)).attach(engine)
        >>> _ = engine.run([0], max_epochs=3)
        >>> timer.times, timer.last, timer.average
        ([5.0, 2.0, 3.0], 3.0, 2.5)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.times: list[float] = []
        self._started: float | None = None
        self._pending: float | None = None

    def attach(self, engine: Engine) -> EpochTimer:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._stop)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The current epoch's time so far: a resumed epoch's time adds both parts, not the downtime."""
        return {"elapsed": None if self._started is None else self.clock() - self._started}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the epoch's time when the engine resumes mid-epoch (ignored at an epoch boundary)."""
        self._pending = state["elapsed"]

    def _start(self, engine: Engine) -> None:
        pending, self._pending = self._pending, None
        self._started = self.clock() - (pending if pending is not None and iteration_in_epoch(engine) else 0.0)

    def _stop(self, engine: Engine) -> None:
        if self._started is not None:
            self.times.append(self.clock() - self._started)
            self._started = None

    @property
    def last(self) -> float | None:
        """The last epoch's time in seconds, or None before any epoch ended."""
        return self.times[-1] if self.times else None

    @property
    def average(self) -> float | None:
        """Mean epoch time without the first epoch (the only one if just one ran); None if none."""
        return average_excluding_first(self.times)
