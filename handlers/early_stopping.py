"""Early stopping on a validation metric: Ignite's ``EarlyStopping`` in Flint's handler shape."""

from __future__ import annotations

import math
from typing import Any, Literal

import ignite.handlers
from ignite.engine import Engine, Events

from flint.engine.engine import register_state

__all__ = ["EarlyStopping"]


class EarlyStopping(ignite.handlers.EarlyStopping):
    """Stops the trainer after ``patience`` validations without improving ``metric``.

    Ignite's ``EarlyStopping`` (same decisions and state), plus what a Flint handler has:
    ``attach(trainer, evaluator)`` registers it on the evaluator's COMPLETED, and its state (the
    patience counter and best score) is saved with the trainer's checkpoints under ``state_key``
    ``"early_stopping"``. Unlike ``EarlyStopping.attach(..., reset_engine=trainer)`` it is not
    reset at the trainer's STARTED, which also fires on a resume and would wipe the loaded patience.
    A NaN score counts as no improvement (Ignite's comparisons alone would make it the best).

    Args:
        patience: validations without improvement before stopping.
        metric: the evaluator metric to watch, from ``evaluator.state.metrics``.
        trainer: the engine to stop.
        mode: ``"max"`` or ``"min"``: which direction of ``metric`` is better. Default ``"max"``.
        **kwargs: passed to Ignite's ``EarlyStopping`` (``threshold``, ``threshold_mode``, ``cumulative``).

    Example:
        >>> from ignite.engine import Engine
        >>> scores = iter([0.5, 0.7, 0.6, 0.6])
        >>> trainer = Engine(lambda e, b: None)
        >>> evaluator = Engine(lambda e, b: None)
        >>> _ = evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(acc=next(scores)))
        >>> _ = trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
        >>> stop = EarlyStopping(2, "acc", trainer).attach(trainer, evaluator)
        >>> trainer.run([0], max_epochs=10).epoch, stop.counter
        (4, 2)
    """

    state_key = "early_stopping"

    def __init__(self, patience: int, metric: str, trainer: Engine, mode: Literal["min", "max"] = "max", **kwargs: Any) -> None:
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"Argument patience should be a positive integer, got {patience!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"Argument mode should be 'max' or 'min', got {mode!r}")
        worst = -math.inf if mode == "max" else math.inf  # what a NaN scores: Ignite's comparisons take it for an improvement
        super().__init__(patience, lambda engine: _finite_or(float(engine.state.metrics[metric]), worst), trainer, mode=mode, **kwargs)
        self.metric = metric

    def attach(self, trainer: Engine, evaluator: Engine) -> EarlyStopping:  # type: ignore[override]  # Flint's shape: both engines
        evaluator.add_event_handler(Events.COMPLETED, self)
        register_state(trainer, self.state_key, self)
        return self

    @property
    def stopped(self) -> bool:
        """Whether patience ran out (also when loaded from a checkpoint of a run that stopped)."""
        return self.counter >= self.patience


def _finite_or(value: float, worst: float) -> float:
    return worst if math.isnan(value) else value
