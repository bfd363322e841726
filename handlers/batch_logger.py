"""Periodic batch logging: BMXNet's ``log_interval`` line, with throughput over the whole interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric

from engine.trainer import iteration_in_epoch, samples_seen
from handlers.lr_tracker import current_lrs
from handlers.meters import Throughput
from handlers.records import RecordStream

__all__ = ["BatchLogger"]


class BatchLogger:
    """Every ``every`` iterations, emits a ``"batch"`` record of the interval since the last one.

    The record is ``{"phase": "batch", "epoch", "iteration", "samples", "loss", "samples_per_sec",
    "lr", <metric>...}``: ``loss`` is the mean batch loss over the interval, ``samples_per_sec``
    counts the interval's samples over its wall time (both intervals restart at each epoch start, so
    validation time is not counted), ``lr`` lists each param group's LR, and each metric given is
    its running value over the epoch so far (BMXNet's ``metric.get()`` at log time). The loss is
    summed on its device and read back only when a record is written; under ``ignite.distributed``
    it is averaged over the ranks there (call it on every rank; give the others a stream with no sinks).

    Ignite's ``Frequency`` measures since epoch start and its loggers read ``loss.item()`` per step;
    this adds the interval window and keeps the hot path free of host syncs.

    Args:
        stream: where records go.
        every: iterations between records (the global iteration count). Default 50.
        optimizer: to report LRs from; default: no ``lr`` field.
        metrics: name -> metric already attached to the engine, reported as running values.
        output_transform: engine output -> loss tensor. Default ``output["loss"]``.
        clock: seconds as a float. Default ``time.perf_counter``.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> seen = []
        >>> ticks = iter(range(100))
        >>> engine = Engine(lambda e, b: {"loss": torch.tensor(float(b))})
        >>> engine.state.samples = 0
        >>> _ = BatchLogger(RecordStream([seen.append]), every=2, clock=lambda: float(next(ticks))).attach(engine)
        >>> _ = engine.run([1, 3, 5, 7], max_epochs=1)
        >>> [(r["iteration"], r["loss"]) for r in seen]
        [(2, 2.0), (4, 6.0)]
    """

    def __init__(
        self,
        stream: RecordStream,
        every: int = 50,
        optimizer: torch.optim.Optimizer | None = None,
        metrics: Mapping[str, Metric] | None = None,
        output_transform: Callable[[Any], torch.Tensor] = lambda out: out["loss"],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.stream, self.every, self.optimizer = stream, every, optimizer
        self.metrics = dict(metrics or {})
        self.output_transform, self.clock = output_transform, clock
        self._throughput = Throughput()
        self._loss_sum: torch.Tensor | None = None
        self._batches = 0
        self._pending: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> BatchLogger:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start_interval)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The interval's loss so far: a run resumed mid-interval logs the same loss as an unbroken one."""
        return {"loss_sum": self._loss_sum, "batches": self._batches}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the interval when the engine resumes mid-epoch (ignored at an epoch boundary)."""
        self._pending = dict(state)

    def _start_interval(self, engine: Engine) -> None:
        self._throughput.start(samples_seen(engine), self.clock())  # after a resume: the resumed part only
        self._loss_sum, self._batches = None, 0
        pending, self._pending = self._pending, None
        if pending is not None and iteration_in_epoch(engine):
            self._loss_sum, self._batches = pending["loss_sum"], int(pending["batches"])

    def _on_iteration(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output).detach()
        if self._loss_sum is None:
            self._loss_sum = loss.float().clone()
        else:
            self._loss_sum.add_(loss)  # in place: no new tensor per iteration
        self._batches += 1
        if engine.state.iteration % self.every == 0:
            self._emit(engine)

    def _emit(self, engine: Engine) -> None:
        samples = samples_seen(engine)
        record: dict[str, Any] = {
            "phase": "batch",
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "samples": samples,
            "loss": float(idist.all_reduce(self._loss_sum.float()).item()) / self._batches / idist.get_world_size(),  # type: ignore[union-attr]
            "samples_per_sec": self._throughput.rate(samples, self.clock()),
        }
        if self.optimizer is not None:
            record["lr"] = current_lrs(self.optimizer)
        for name, metric in self.metrics.items():
            try:
                record[name] = float(metric.compute())
            except NotComputableError:
                pass
        self._loss_sum, self._batches = None, 0
        self.stream.emit(record)
