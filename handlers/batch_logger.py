"""Periodic batch logging: BMXNet's ``log_interval`` line, with throughput over the whole interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric

from flint.engine.engine import FlintEvents, register_state, when
from flint.engine.progress import progress
from flint.handlers.lr_tracker import current_lrs
from flint.handlers.meters import Throughput
from flint.handlers.records import RecordStream

__all__ = ["BatchLogger"]


class BatchLogger:
    """Every ``every`` iterations, emits a ``"batch"`` record of the interval since the last one.

    The record is ``{"phase": "batch", "epoch", "iteration", "samples", "loss", "samples_per_sec",
    "lr", <metric>...}``: ``loss`` is the mean loss per sample over the interval, ``samples_per_sec``
    counts the interval's samples over its wall time (both intervals restart at each epoch start, so
    validation time is not counted), ``lr`` lists each param group's LR, and each metric given is
    its running value over the epoch so far (BMXNet's ``metric.get()`` at log time). The loss comes
    from the running sum a trainer made by ``flint.engine.create_trainer`` keeps on the device
    (:class:`flint.engine.TrainProgress`), read back only when a record is written; under
    ``ignite.distributed`` it covers all ranks (call this on every rank; give the others a stream
    with no sinks). It needs such a trainer: ``attach`` refuses another engine.

    Records are emitted at ``FlintEvents.ITERATION_REPORT``, after the iteration's metric updates.
    Its state (where the interval started) is saved with the trainer's checkpoints under
    ``state_key`` ``"batch_logger"``: a run resumed mid-interval logs the loss an unbroken one does.

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
        >>> from flint.engine import create_trainer
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

    state_key = "batch_logger"

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

    def attach(self, engine: Engine) -> BatchLogger:
        progress(engine, "BatchLogger")  # refuses another engine now, not at the first record
        engine.add_event_handler(Events.EPOCH_STARTED, self._start_window)
        engine.add_event_handler(when(engine, FlintEvents.NEW_EPOCH), self._new_epoch)
        # A plain handler with its own modulo: cheaper than an every= filter, which runs whether due or not.
        engine.add_event_handler(when(engine, FlintEvents.ITERATION_REPORT), self._on_iteration)
        register_state(engine, self.state_key, self)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Where the interval started within the epoch."""
        return {"loss_total": self._mark[0], "samples": self._mark[1]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._mark = (float(state["loss_total"]), int(state["samples"]))

    def _start_window(self, engine: Engine) -> None:
        self._throughput.start(progress(engine, "BatchLogger").samples, self.clock())  # after a resume: the resumed part only

    def _new_epoch(self, engine: Engine) -> None:
        self._mark = (0.0, 0)

    def _on_iteration(self, engine: Engine) -> None:
        if not engine.state.iteration % self.every:
            self._emit(engine)

    def _emit(self, engine: Engine) -> None:
        counts = progress(engine, "BatchLogger")
        samples = counts.samples
        total, count = counts.epoch_loss()
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
