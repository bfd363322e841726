"""Estimated time left in the epoch and in the run, optionally kept in a small file for schedulers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from flint.engine.engine import FlintEvents, when
from flint.handlers.files import write_text_atomic
from flint.handlers.meters import remaining_time

__all__ = ["ETA"]


class ETA:
    """Estimates the time left in the current epoch and in the whole run, as BMXNet's ``--progress``.

    The epoch estimate extrapolates the epoch's iterations so far; the run estimate adds the remaining
    epochs at the wall time of the last full epoch (validation and checkpoints included), or at this
    epoch's projected time during the first. Estimates are never negative. With ``path``, a JSON file
    ``{"epoch", "epochs", "iteration", "epoch_progress", "run_progress", "epoch_eta_s", "run_eta_s",
    "status"}`` is rewritten atomically every ``every`` iterations and at each epoch end, with
    ``status`` ``"running"``, then at the end ``"finished"`` (every epoch ran) or ``"stopped"`` (an
    interrupt, a preemption or early stopping ended it before its last epoch); if it cannot
    be (a full disk), :class:`flint.handlers.WriteError` (``cannot write progress file PATH: REASON``) stops
    the run and the file keeps its last content.

    Args:
        path: the progress file; None keeps estimates in memory only (``estimate(engine)``).
        every: iterations between file updates. Default 10.
        clock: seconds as a float. Default ``time.perf_counter``.

    Example:
        >>> from ignite.engine import Engine
        >>> now = {"t": 0.0}
        >>> engine = Engine(lambda e, b: now.__setitem__("t", now["t"] + 1.0))  # each batch takes 1 s
        >>> eta = ETA(clock=lambda: now["t"]).attach(engine)
        >>> seen = []
        >>> _ = engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(eta.estimate(e)))
        >>> _ = engine.run([0] * 4, max_epochs=2)
        >>> [(s["epoch_eta_s"], s["run_eta_s"]) for s in seen[:2]] + [(seen[5]["epoch_eta_s"], seen[5]["run_eta_s"])]
        [(3.0, 7.0), (2.0, 6.0), (2.0, 2.0)]
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, every: int = 10, clock: Callable[[], float] = time.perf_counter):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.path = Path(path) if path is not None else None
        self.every, self.clock = every, clock
        self._epoch_start: float | None = None
        self._last_epoch_wall: float | None = None

    def attach(self, trainer: Engine) -> ETA:
        trainer.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        if self.path is not None:
            trainer.add_event_handler(when(trainer, FlintEvents.ITERATION_REPORT), self._on_iteration)  # cheaper than every=
            trainer.add_event_handler(when(trainer, FlintEvents.EPOCH_REPORT), self.write)
            trainer.add_event_handler(Events.COMPLETED, self._on_completed)
        return self

    def _on_completed(self, engine: Engine) -> None:
        stopped = engine.state.max_epochs is not None and engine.state.epoch < engine.state.max_epochs
        self.write(engine, "stopped" if stopped else "finished")

    def _on_iteration(self, engine: Engine) -> None:
        if engine.state.iteration % self.every == 0:
            self.write(engine)

    def _on_epoch_started(self, engine: Engine) -> None:
        now = self.clock()
        if self._epoch_start is not None:
            self._last_epoch_wall = now - self._epoch_start
        self._epoch_start = now

    def estimate(self, engine: Engine) -> dict[str, Any]:
        state = engine.state
        length = state.epoch_length or 1
        done = (state.iteration - 1) % length + 1 if state.iteration else 0
        elapsed = self.clock() - (self._epoch_start if self._epoch_start is not None else self.clock())
        epoch_eta = remaining_time(done, length, elapsed)
        epochs_after = max(0, (state.max_epochs or state.epoch) - state.epoch)
        per_epoch = self._last_epoch_wall or (elapsed / done * length if done else None)
        run_eta = None if epoch_eta is None or per_epoch is None else epoch_eta + epochs_after * per_epoch
        total = length * (state.max_epochs or state.epoch)
        return {
            "epoch": state.epoch,
            "epochs": state.max_epochs,
            "iteration": state.iteration,
            "epoch_progress": round(done / length, 4),
            "run_progress": round(state.iteration / total, 4) if total else None,
            "epoch_eta_s": epoch_eta,
            "run_eta_s": run_eta,
        }

    def write(self, engine: Engine, status: str = "running") -> None:
        assert self.path is not None
        record = {**self.estimate(engine), "status": status}
        if status != "running":
            record.update(epoch_eta_s=0.0, run_eta_s=0.0)
        write_text_atomic(self.path, json.dumps(record) + "\n", "progress file")
