"""Loss guard: stop the run, before anything is saved, when the loss becomes NaN or infinite."""

from __future__ import annotations

import math

from ignite.engine import Engine, Events

from flint.engine.progress import progress

__all__ = ["LossGuard", "NonFiniteLoss"]


class NonFiniteLoss(RuntimeError):
    """The training loss, or the validation metric a run monitors (``MetricGuard``), became NaN or infinite."""


class LossGuard:
    """Raises :class:`NonFiniteLoss` once a training loss has been NaN or infinite.

    Ignite's ``TerminateOnNan`` reads every output back to the host (a device sync per iteration)
    and only asks the engine to terminate, so handlers later on the same event still run and can
    save the broken weights. This guard reads the epoch's running loss sum that a trainer made by
    ``flint.engine.create_trainer`` keeps on the device (:class:`flint.engine.TrainProgress`; NaN or
    infinite once any loss was; nothing per step) every ``every`` iterations at ITERATION_COMPLETED,
    at each EPOCH_COMPLETED and at TERMINATE, and raises. It needs such a trainer: ``attach``
    refuses another engine. On a Flint engine the epoch's records, validation and checkpoints come
    after EPOCH_COMPLETED, and ``Checkpointing`` saves a stopped run at COMPLETED, after TERMINATE:
    whatever the order of attachment, nothing is validated or saved after a non-finite loss, so the
    last checkpoint on disk is the last good one. Call :meth:`check` before saving by other means.

    Args:
        every: iterations between reads of the sum. Default 50.

    Example:
        >>> import torch
        >>> from flint.engine import create_trainer
        >>> model = torch.nn.Linear(1, 1)
        >>> trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss)
        >>> _ = LossGuard(every=2).attach(trainer)
        >>> data = [(torch.ones(1, 1), torch.full((1, 1), y)) for y in (1.0, float("nan"), 2.0, 3.0)]
        >>> try:
        ...     trainer.run(data)
        ... except NonFiniteLoss as e:
        ...     print(e)
        the training loss became nan or inf at or before iteration 2 (epoch 1)
    """

    def __init__(self, every: int = 50) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.every = every

    def attach(self, engine: Engine) -> LossGuard:
        progress(engine, "LossGuard")  # refuses another engine now, not at the first check
        # A plain handler with its own modulo: cheaper than an every= filter, which runs whether due or not.
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)
        engine.add_event_handler(Events.TERMINATE, self.check)  # a stop is about to be saved
        return self

    def _on_iteration(self, engine: Engine) -> None:
        if not engine.state.iteration % self.every:
            self.check(engine)

    def check(self, engine: Engine) -> None:
        """Raise :class:`NonFiniteLoss` if any loss of the epoch so far was NaN or infinite (reads one value back)."""
        if not engine.state.iteration:
            return  # nothing trained yet
        total, _ = progress(engine, "LossGuard").epoch_loss()  # summed over the ranks: every rank stops at the same check
        if not math.isfinite(total):
            raise NonFiniteLoss(
                f"the training loss became nan or inf at or before iteration {engine.state.iteration} (epoch {engine.state.epoch})"
            )
