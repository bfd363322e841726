"""Metric guard: a word on non-finite validation metrics, and a stop when the monitored one is."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from flint.handlers.loss_guard import NonFiniteLoss

__all__ = ["MetricGuard", "non_finite"]

logger = logging.getLogger(__name__)


def non_finite(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics whose value is NaN or infinite (a tensor: any element), name -> value; values that are not numbers are skipped.

    Example:
        >>> non_finite({"loss": float("nan"), "accuracy": 0.5, "mae": float("inf"), "note": "text"})
        {'loss': nan, 'mae': inf}
    """
    found = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            bad = (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())
        else:
            bad = isinstance(value, numbers.Real) and not math.isfinite(value)
        if bad:
            found[name] = value
    return found


class MetricGuard:
    """Warns once per run of a NaN or infinite validation metric; raises :class:`NonFiniteLoss` when it is the monitored one.

    A NaN validation metric would otherwise pass without a word: no checkpoint beats NaN as the best,
    and :class:`flint.handlers.EarlyStopping` counts it as no improvement. At the end of
    each validation (the evaluator's COMPLETED) this guard checks every metric of
    ``evaluator.state.metrics``. The first non-finite one logs one warning naming the training epoch
    and the metric (none again in this run). A non-finite ``monitor`` (the metric that picks the best
    checkpoint and drives early stopping) raises :class:`flint.handlers.NonFiniteLoss` naming the
    metric and the epoch: on a Flint trainer validation runs before the epoch's checkpoint is saved,
    so nothing is saved after it, and the run stops as it does for a non-finite training loss.

    Args:
        monitor: the validation metric whose non-finite value stops the run; None only warns. Default None.

    Example:
        >>> from ignite.engine import Engine
        >>> losses = iter([0.5, float("nan")])
        >>> trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
        >>> _ = evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(loss=next(losses)))
        >>> _ = trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
        >>> _ = MetricGuard("loss").attach(trainer, evaluator)
        >>> try:
        ...     trainer.run([0], max_epochs=3)
        ... except NonFiniteLoss as e:
        ...     print(e)
        the validation loss became nan at epoch 2
    """

    def __init__(self, monitor: str | None = None) -> None:
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"Argument monitor should be a metric name or None, got {monitor!r}")
        self.monitor = monitor
        self.warned = False

    def attach(self, trainer: Engine, evaluator: Engine) -> MetricGuard:
        evaluator.add_event_handler(Events.COMPLETED, self.check, trainer)
        return self

    def check(self, evaluator: Engine, trainer: Engine) -> None:
        """Warn of, or raise for, the non-finite metrics of the validation just run (of ``trainer``'s epoch)."""
        found = non_finite(evaluator.state.metrics)
        epoch = trainer.state.epoch
        if self.monitor in found:
            raise NonFiniteLoss(f"the validation {self.monitor} became {_text(found[self.monitor])} at epoch {epoch}")
        if found and not self.warned:
            self.warned = True
            names = ", ".join(f"{name} {_text(value)}" for name, value in found.items())
            logger.warning("Validation at epoch %d: %s (not warned again in this run)", epoch, names)


def _text(value: Any) -> str:
    """``nan``, ``inf`` or ``-inf``; for a tensor of several values, what it holds."""
    if isinstance(value, torch.Tensor):
        return f"{value.item()}" if value.numel() == 1 else "a tensor holding NaN or Inf"
    return f"{value}"
