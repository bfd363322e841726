"""Epoch timing, as BMXNet's: each epoch's time and the average without the first (warm-up) epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ignite.engine import Engine, Events

from flint.engine.engine import register_state
from flint.handlers.meters import average_excluding_first

__all__ = ["EpochTimer"]


class EpochTimer:
    """Times each epoch from EPOCH_STARTED to EPOCH_COMPLETED: the training time, without validation.

    On a Flint engine validation and checkpoints run after EPOCH_COMPLETED (``flint.engine.FlintEvents``),
    so they are never counted. Ignite's ``Timer`` averages every epoch and is not injectable; this
    keeps the list and averages without the first epoch of the process, whose time includes
    warm-up (after a resume too). The time spent in the current epoch is saved with the engine's
    checkpoints under ``state_key`` ``"epoch_timer"``: an epoch resumed mid-way adds both parts,
    not the downtime.

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

    state_key = "epoch_timer"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.times: list[float] = []
        self._started: float | None = None
        self._carried = 0.0  # time the current epoch ran before a resume

    def attach(self, engine: Engine) -> EpochTimer:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._stop)
        register_state(engine, self.state_key, self)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The current epoch's time so far; None between epochs."""
        return {"elapsed": None if self._started is None else self.clock() - self._started}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._carried = state["elapsed"] or 0.0

    def _start(self, engine: Engine) -> None:
        self._started, self._carried = self.clock() - self._carried, 0.0

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
