"""Epoch metrics, BMXNet's ``metric.reset()/update()/get()``: reset at epoch start, report at epoch end."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import MetricUsage

from flint.engine.engine import FlintEvents, register_state, when
from flint.engine.trainer import samples_seen
from flint.handlers.records import RecordStream

__all__ = ["EpochMetrics"]

logger = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, numbers.Real):
        return float(value)
    return None


class EpochMetrics:
    """Attaches metrics to an engine epoch-wise and emits one record of their values per epoch.

    Each metric is attached with Ignite's ``Metric.attach``: reset at ``FlintEvents.NEW_EPOCH`` (not
    when a run resumes inside the epoch: a mid-epoch checkpoint's sums carry on), updated every
    iteration on the device, computed into ``engine.state.metrics`` at EPOCH_COMPLETED. At
    ``FlintEvents.EPOCH_REPORT`` a record ``{"phase": phase, "epoch", "iteration", "samples",
    <metric>..., <extra>...}`` is emitted. The metrics' sums are saved with the engine's checkpoints
    under ``state_key`` ``"<phase>_metrics"``.

    For validation, attach to the evaluator and pass the ``trainer``: the record then carries the
    trainer's epoch and samples. Non-scalar metric values are left out of the record.

    Args:
        metrics: name -> Ignite metric, not yet attached.
        stream: where records go.
        phase: the record's phase. Default ``"training"``.
        trainer: the engine whose epoch and samples label the record. Default: the attached engine.
        extra: ``extra(engine) -> dict`` of more fields (epoch time, LR), called at emit time.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from ignite.metrics import Average
        >>> seen = []
        >>> engine = Engine(lambda e, b: torch.tensor(b))
        >>> _ = EpochMetrics({"mean": Average()}, RecordStream([seen.append])).attach(engine)
        >>> _ = engine.run([1.0, 2.0, 3.0, 5.0], max_epochs=2, epoch_length=2)
        >>> [(r["epoch"], r["mean"]) for r in seen]
        [(1, 1.5), (2, 4.0)]
    """

    def __init__(
        self,
        metrics: Mapping[str, Metric],
        stream: RecordStream,
        phase: str = "training",
        trainer: Engine | None = None,
        extra: Callable[[Engine], Mapping[str, Any]] | None = None,
    ) -> None:
        self.metrics = dict(metrics)
        self.stream, self.phase, self.trainer, self.extra = stream, phase, trainer, extra
        self.state_key = f"{phase}_metrics"

    def attach(self, engine: Engine) -> EpochMetrics:
        usage = MetricUsage(when(engine, FlintEvents.NEW_EPOCH), Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED)
        for name, metric in self.metrics.items():
            metric.attach(engine, name, usage)
        engine.add_event_handler(when(engine, FlintEvents.EPOCH_REPORT), self._emit)
        register_state(engine, self.state_key, self)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The metrics' running sums over the epoch so far."""
        return {name: metric.state_dict() for name, metric in self.metrics.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, metric in self.metrics.items():
            try:
                metric.load_state_dict(state[name])
            except ValueError as e:  # saved by another number of ranks: each rank's sums are gone
                logger.warning("Metric %s restarts this epoch: %s", name, str(e).splitlines()[0])
                metric.reset()

    def _emit(self, engine: Engine) -> None:
        clock = self.trainer or engine
        record: dict[str, Any] = {
            "phase": self.phase,
            "epoch": clock.state.epoch,
            "iteration": clock.state.iteration,
            "samples": samples_seen(clock),
        }
        for name in self.metrics:
            value = _scalar(engine.state.metrics.get(name))
            if value is not None:
                record[name] = value
        if self.extra is not None:
            record.update(self.extra(engine))
        self.stream.emit(record)
