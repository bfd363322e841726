"""Periodic batch logging: BMXNet's ``log_interval`` line, with throughput over the whole interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric

from engine.trainer import epoch_loss_total, iteration_in_epoch, samples_seen
from handlers.lr_tracker import current_lrs
from handlers.meters import Throughput
from handlers.records import RecordStream

__all__ = ["BatchLogger"]


class BatchLogger:
    """Every ``every`` iterations, emits a ``"batch"`` record of the interval since the last one.

    The record is ``{"phase": "batch", "epoch", "iteration", "samples", "loss", "samples_per_sec",
    "lr", <metric>...}``: ``loss`` is the mean loss per sample over the interval, ``samples_per_sec``
    counts the interval's samples over its wall time (both intervals restart at each epoch start, so
    validation time is not counted), ``lr`` lists each param group's LR, and each metric given is
    its running value over the epoch so far (BMXNet's ``metric.get()`` at log time). The loss comes
    from the running sum a trainer made by ``engine.create_trainer`` keeps on the device, read back
    only when a record is written; under ``ignite.distributed`` it covers all ranks (call this on
    every rank; give the others a stream with no sinks).

    Ignite's ``Frequency`` measures since epoch start and its loggers read ``loss.item()`` per step;
    this adds the interval window and keeps the hot path free of host syncs.

    Args:
        stream: where records go.
        every: iterations between records (the global iteration count). Default 50.
        optimizer: to report LRs from; default: no ``lr`` field.
        metrics: name -> metric already attached to the engine, reported as running values.
        clock: seconds as a float. Default ``time.perf_counter``.

    Example:
        >>> import torch
        >>> from engine import create_trainer
        >>> seen = []
        >>> ticks = iter(range(100))
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(model.weight)
        >>> trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.nn.functional.l1_loss)
        >>> _ = BatchLogger(RecordStream([seen.append]), every=2, clock=lambda: float(next(ticks))).attach(trainer)
        >>> _ = trainer.run([(torch.zeros(1, 1), torch.full((1, 1), float(b))) for b in (1, 3, 5, 7)], max_epochs=1)
        >>> [(r["iteration"], r["loss"]) for r in seen]
        [(2, 2.0), (4, 6.0)]
    """

    def __init__(
        self,
        stream: RecordStream,
        every: int = 50,
        optimizer: torch.optim.Optimizer | None = None,
        metrics: Mapping[str, Metric] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.stream, self.every, self.optimizer = stream, every, optimizer
        self.metrics = dict(metrics or {})
        self.clock = clock
        self._throughput = Throughput()
        self._mark = (0.0, 0)  # the epoch's loss total and samples at the last record
        self._pending: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> BatchLogger:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start_interval)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._emit)  # a Flint engine: no call between
        return self

    def state_dict(self) -> dict[str, Any]:
        """Where the interval started: a run resumed mid-interval logs the same loss as an unbroken one."""
        return {"loss_total": self._mark[0], "samples": self._mark[1]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the interval when the engine resumes mid-epoch (ignored at an epoch boundary)."""
        self._pending = dict(state)

    def _start_interval(self, engine: Engine) -> None:
        self._throughput.start(samples_seen(engine), self.clock())  # after a resume: the resumed part only
        self._mark = (0.0, 0)
        pending, self._pending = self._pending, None
        if pending is not None and iteration_in_epoch(engine):
            self._mark = (float(pending["loss_total"]), int(pending["samples"]))

    def _emit(self, engine: Engine) -> None:
        samples = samples_seen(engine)
        total, count = epoch_loss_total(engine)
        record: dict[str, Any] = {
            "phase": "batch",
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "samples": samples,
            "loss": (total - self._mark[0]) / max(count - self._mark[1], 1),
            "samples_per_sec": self._throughput.rate(samples, self.clock()),
        }
        if self.optimizer is not None:
            record["lr"] = current_lrs(self.optimizer)
        for name, metric in self.metrics.items():
            try:
                record[name] = float(metric.compute())
            except NotComputableError:
                pass
        self._mark = (total, count)
        self.stream.emit(record)
