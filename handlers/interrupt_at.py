"""BMXNet's ``--interrupt-at``: stop the run after a given epoch (a checkpoint is then saved)."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

__all__ = ["InterruptAt"]

logger = logging.getLogger(__name__)


class InterruptAt:
    """Stops the trainer after epoch ``epoch`` and everything that follows it (records, validation, saving).

    Calls ``trainer.terminate()`` at that epoch's EPOCH_COMPLETED: Ignite stops once the epoch's
    handlers have run, and on a Flint engine its records, validation and checkpoint too
    (``flint.engine.FlintEvents``); ``flint.handlers.Checkpointing`` saves the stopped run at COMPLETED.
    ``triggered`` tells the caller the run was interrupted, so a CLI can exit with status 3 for a
    scheduler to relaunch it with ``--resume``. A library handler does not exit the process: Ignite
    swallows ``SystemExit`` raised in handlers whenever an EXCEPTION_RAISED handler is attached.

    Args:
        epoch: the 1-based epoch after which to stop.

    Example:
        >>> from ignite.engine import Engine
        >>> trainer = Engine(lambda e, b: None)
        >>> interrupt = InterruptAt(2).attach(trainer)
        >>> state = trainer.run([0], max_epochs=5)
        >>> state.epoch, interrupt.triggered
        (2, True)
    """

    def __init__(self, epoch: int) -> None:
        if not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"Argument epoch should be a positive integer, got {epoch!r}")
        self.epoch = epoch
        self.triggered = False

    def attach(self, trainer: Engine) -> InterruptAt:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self)
        trainer.add_event_handler(Events.TERMINATE, self._announce)
        return self

    def __call__(self, trainer: Engine) -> None:
        self.triggered = True
        trainer.terminate()

    def _announce(self, trainer: Engine) -> None:
        if self.triggered:  # at TERMINATE: after the epoch's own records, so the log reads in order
            logger.info("Interrupting after epoch %d as asked (interrupt-at)", self.epoch)
