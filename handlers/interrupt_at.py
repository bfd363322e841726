"""BMXNet's ``--interrupt-at``: after a given epoch, save a checkpoint and stop the run."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ignite.engine import Engine, Events

__all__ = ["InterruptAt"]

logger = logging.getLogger(__name__)


class InterruptAt:
    """After epoch ``epoch`` completes (and its validation, if attached before), saves and stops.

    Calls ``save(trainer)`` and then ``trainer.terminate()``; ``triggered`` tells the caller the run
    was interrupted, so a CLI can exit with status 3 for a scheduler to relaunch it with
    ``--resume``. A library handler does not exit the process: Ignite swallows ``SystemExit`` raised
    in handlers whenever an EXCEPTION_RAISED handler is attached.

    Args:
        epoch: the 1-based epoch after which to stop.
        save: ``save(trainer)`` writing a checkpoint, e.g. ``Checkpointing.save_latest``.

    Example:
        >>> from ignite.engine import Engine
        >>> saved = []
        >>> trainer = Engine(lambda e, b: None)
        >>> interrupt = InterruptAt(2, save=lambda t: saved.append(t.state.epoch)).attach(trainer)
        >>> state = trainer.run([0], max_epochs=5)
        >>> state.epoch, saved, interrupt.triggered
        (2, [2], True)
    """

    def __init__(self, epoch: int, save: Callable[[Engine], None]) -> None:
        if not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"Argument epoch should be a positive integer, got {epoch!r}")
        self.epoch, self.save = epoch, save
        self.triggered = False

    def attach(self, trainer: Engine) -> InterruptAt:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self)
        return self

    def __call__(self, trainer: Engine) -> None:
        logger.info("Interrupting after epoch %d as asked (interrupt-at)", self.epoch)
        self.save(trainer)
        self.triggered = True
        trainer.terminate()
