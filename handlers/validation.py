"""Periodic validation: run the evaluator every N training epochs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ignite.engine import Engine

from flint.engine.engine import FlintEvents, when

__all__ = ["Validation"]


class Validation:
    """Runs ``evaluator`` over ``data`` after every ``every``-th training epoch and after the last one.

    It runs at the trainer's ``FlintEvents.VALIDATE``: after the epoch's training records and
    before checkpoints are saved, whatever order handlers were attached in.

    Args:
        evaluator: the evaluation engine (see ``flint.engine.create_evaluator``).
        data: the validation data.
        every: epochs between validations. Default 1.
        epoch_length: batches per validation; default: all of ``data``.

    Example:
        >>> from ignite.engine import Engine
        >>> evaluator = Engine(lambda e, b: None)
        >>> trainer = Engine(lambda e, b: None)
        >>> validation = Validation(evaluator, [0, 1], every=2).attach(trainer)
        >>> _ = trainer.run([0], max_epochs=5)
        >>> validation.epochs
        [2, 4, 5]
    """

    def __init__(self, evaluator: Engine, data: Iterable[Any], every: int = 1, epoch_length: int | None = None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.evaluator, self.data, self.every, self.epoch_length = evaluator, data, every, epoch_length
        self.epochs: list[int] = []

    def due(self, trainer: Engine) -> bool:
        """Whether the epoch just completed is validated: every ``every``-th and the last."""
        epoch = trainer.state.epoch
        return epoch % self.every == 0 or epoch == trainer.state.max_epochs

    def attach(self, trainer: Engine) -> Validation:
        trainer.add_event_handler(when(trainer, FlintEvents.VALIDATE), self)
        return self

    def __call__(self, trainer: Engine) -> None:
        if self.due(trainer):
            self.evaluator.run(self.data, epoch_length=self.epoch_length)
            self.epochs.append(trainer.state.epoch)
